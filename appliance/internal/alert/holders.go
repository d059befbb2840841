package alert

import (
	"fmt"
	"strings"

	"github.com/domainm/domainm/detectors"
)

// boundMatch bounds a match for an event: its strings, and the processes it lists
// (maxMatchProcesses; ProcessCount still counts them all).
func boundMatch(x Match) Match {
	x.Name, x.DataHex, x.DataText = bound(x.Name), bound(x.DataHex), bound(x.DataText)
	x.ProcessCount = max(x.ProcessCount, len(x.Processes))
	x.Processes = x.Processes[:min(len(x.Processes), maxMatchProcesses)]
	for i := range x.Processes {
		x.Processes[i].Name = bound(x.Processes[i].Name)
	}
	if k := x.Kernel; k != nil {
		x.Kernel = &MatchKernel{Kind: bound(k.Kind), Module: bound(k.Module), Address: k.Address}
	}
	return x
}

// heldBy says, for the message, who holds the lowest-addressed memory match: " (pid 812
// sshd at 0x7f..., and 2 more processes)", " (kernel module rk at 0xffff...)", " (kernel
// direct map)"; "" when the match was not attributed.
func heldBy(ms []detectors.StringMatch) string {
	if len(ms) == 0 {
		return ""
	}
	low := ms[0]
	for _, m := range ms[1:] {
		if m.Offset < low.Offset {
			low = m
		}
	}
	var parts []string
	if len(low.Processes) > 0 {
		p := low.Processes[0]
		s := fmt.Sprintf("pid %d %s at %#x", p.PID, bound(p.Name), p.Address)
		switch n := max(low.ProcessCount, len(low.Processes)) - 1; {
		case n == 1:
			s += ", and 1 more process"
		case n > 1:
			s += fmt.Sprintf(", and %d more processes", n)
		}
		parts = append(parts, s)
	}
	if k := low.Kernel; k != nil {
		s := "kernel"
		switch k.Kind {
		case "module":
			s += " module " + bound(k.Module)
		case "image":
			s += " image"
		case "vmalloc":
			s += " vmalloc area"
			if k.Module != "" {
				s += " of module " + bound(k.Module)
			}
		default:
			s += " " + strings.ReplaceAll(bound(k.Kind), "-", " ")
		}
		if k.Address != 0 {
			s += fmt.Sprintf(" at %#x", k.Address)
		}
		parts = append(parts, s)
	}
	if low.Virtual {
		parts = append(parts, "across a page boundary of its virtual memory")
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}
