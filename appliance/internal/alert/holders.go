package alert

import (
	"fmt"
	"strings"

	"github.com/domainm/domainm/detectors"
)

// holders maps a memory match's attribution (detectors.StringMatch.Processes and
// Kernel) to the event's, bounded.
func holders(m detectors.StringMatch) ([]MatchProcess, int, *MatchKernel) {
	var ps []MatchProcess
	for _, p := range m.Processes[:min(len(m.Processes), maxMatchProcesses)] {
		ps = append(ps, MatchProcess{PID: p.PID, Name: bound(p.Name), Address: fmt.Sprintf("%#x", p.Address)})
	}
	n := max(m.ProcessCount, len(m.Processes))
	var k *MatchKernel
	if m.Kernel != nil {
		k = &MatchKernel{Kind: bound(m.Kernel.Kind), Module: bound(m.Kernel.Module)}
		if m.Kernel.Address != 0 {
			k.Address = fmt.Sprintf("%#x", m.Kernel.Address)
		}
	}
	return ps, n, k
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
