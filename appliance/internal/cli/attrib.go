package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/linux"
)

// attribution is what scan-memory reports about naming who holds each match.
type attribution struct {
	Kernel string `json:"kernel,omitempty"` // the guest kernel's release, when its layout is known
	// Error says why matches carry guest-physical addresses only (no Linux layout found,
	// or --attribute=false).
	Error         string  `json:"error,omitempty"`
	Processes     int     `json:"processes"` // user processes whose page tables were searched
	LayoutSeconds float64 `json:"layout_seconds"`
	Seconds       float64 `json:"seconds"` // listing processes and modules, and attributing
}

// attribute names, for every match of ms, the guest processes that map it or the part
// of the kernel that holds it, when src holds a Linux guest whose layout can be derived.
func attribute(src memscan.Source, ms []detectors.Match) attribution {
	g, err := linux.OpenGuest(src)
	if err != nil {
		return attribution{Error: "guest layout unknown: " + err.Error()}
	}
	a := attribution{Kernel: g.In.K.Release, LayoutSeconds: g.Took.Seconds()}
	t0 := time.Now()
	snap, err := g.Snapshot()
	if err == nil {
		var st linux.AttributeStats
		st, err = snap.Annotate(ms)
		a.Processes = st.Processes
	}
	a.Seconds = time.Since(t0).Seconds()
	if err != nil {
		a.Error = "listing the guest's processes: " + err.Error()
	}
	return a
}

// say is the attribution's line for people.
func (a attribution) say() string {
	if a.Error != "" {
		return "matches not attributed to processes: " + a.Error
	}
	return fmt.Sprintf("matches attributed: Linux %s (layout %.2fs), %d user processes (%.3fs)", a.Kernel, a.LayoutSeconds, a.Processes, a.Seconds)
}

// holderText says who holds a memory match: "pid 7 sh 0x5555..., pid 9 sh 0x5556..."
// (at most 4 listed, then a count) or "kernel module brd 0xffff...".
func holderText(m detectors.StringMatch) string {
	var parts []string
	for i, p := range m.Processes {
		if i == 4 {
			break
		}
		parts = append(parts, fmt.Sprintf("pid %d %s %#x", p.PID, diskSafe(p.Name), p.Address))
	}
	if n := max(m.ProcessCount, len(m.Processes)); n > len(parts) {
		parts = append(parts, fmt.Sprintf("and %d more", n-len(parts)))
	}
	if k := m.Kernel; k != nil {
		s := "kernel " + k.Kind
		if k.Module != "" {
			s += " " + diskSafe(k.Module)
		}
		if k.Address != 0 {
			s += fmt.Sprintf(" %#x", k.Address)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
