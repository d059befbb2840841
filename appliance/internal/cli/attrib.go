package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/linux"
)

// attribution is what scan-memory reports about naming who holds each match and about
// the virtual scan.
type attribution struct {
	Kernel string `json:"kernel,omitempty"` // the guest kernel's release, when its layout is known
	// Error says why matches carry guest-physical addresses only (no Linux layout found,
	// or --attribute=false).
	Error         string  `json:"error,omitempty"`
	Processes     int     `json:"processes"` // user processes whose page tables were searched
	LayoutSeconds float64 `json:"layout_seconds"`
	Seconds       float64 `json:"seconds"` // listing processes and modules, attributing (and the virtual scan)
	// Virtual is the scan of virtual address spaces across seams (nil: not run).
	Virtual *virtualSummary `json:"virtual,omitempty"`
}

// virtualSummary is what the virtual (seam) scan did.
type virtualSummary struct {
	Error   string  `json:"error,omitempty"`
	Seams   int     `json:"seams"`   // distinct page boundaries not physically adjacent
	Zero    int     `json:"zero"`    // all zero, not scanned
	Scanned int     `json:"scanned"` // windows handed to the rule engine
	Bytes   uint64  `json:"bytes_scanned"`
	Tables  int     `json:"page_tables"`
	Matches int     `json:"matches"` // string matches across seams
	Deduped int     `json:"deduplicated"`
	Half    int     `json:"window_half"` // bytes scanned on each side of a seam
	Seconds float64 `json:"seconds"`     // with the attribution (one page-table walk does both)
}

// guestScan names, for every match of ms, the guest processes that map it or the part
// of the kernel that holds it, when src holds a Linux guest whose layout can be
// derived; with virtual set it then scans the guest's seams with rules and adds what
// crosses them.
func guestScan(ctx context.Context, src memscan.Source, ms []detectors.Match, rules memscan.RuleSet, virtual bool, workers int) ([]detectors.Match, attribution) {
	g, err := linux.OpenGuest(src)
	if err != nil {
		return ms, attribution{Error: "guest layout unknown: " + err.Error()}
	}
	a := attribution{Kernel: g.In.K.Release, LayoutSeconds: g.Took.Seconds()}
	t0 := time.Now()
	snap, err := g.Snapshot()
	if err != nil {
		a.Error = "listing the guest's processes: " + err.Error()
		return ms, a
	}
	a.Processes = len(snap.Tasks)
	if !virtual {
		_, err := snap.Annotate(ms)
		a.Seconds = time.Since(t0).Seconds()
		if err != nil {
			a.Error = "attributing: " + err.Error()
		}
		return ms, a
	}
	// The walk that finds the seams attributes the physical matches too.
	sc := memscan.NewSeamScanner(0, workers, 0)
	ms, vs, err := snap.ScanVirtual(ctx, src, sc, rules, ms)
	a.Seconds = time.Since(t0).Seconds()
	a.Virtual = &virtualSummary{Seams: vs.Seams, Zero: vs.Zero, Scanned: vs.Scanned, Bytes: vs.Bytes, Tables: vs.Tables,
		Matches: vs.Matches, Deduped: vs.Deduped, Half: sc.Half, Seconds: a.Seconds}
	if err != nil {
		a.Virtual.Error = err.Error()
	} else if len(vs.Errors) > 0 {
		a.Virtual.Error = fmt.Sprintf("%d seams not scanned; first: %v", len(vs.Errors), vs.Errors[0])
	}
	return ms, a
}

// say is the attribution's and the virtual scan's lines for people.
func (a attribution) say() string {
	if a.Error != "" {
		return "matches not attributed to processes, virtual address spaces not scanned: " + a.Error
	}
	s := fmt.Sprintf("matches attributed: Linux %s (layout %.2fs), %d user processes (%.3fs)", a.Kernel, a.LayoutSeconds, a.Processes, a.Seconds)
	switch v := a.Virtual; {
	case v == nil:
		s += "; virtual address spaces not scanned (--virtual=false)"
	case v.Error != "":
		s += "; virtual scan incomplete: " + v.Error
	default:
		s += fmt.Sprintf("; virtual scan: %d seams (page boundaries not physically adjacent), %d scanned (%s), %d matches across them, %.3fs",
			v.Seams, v.Scanned, humanBytes(v.Bytes), v.Matches, v.Seconds)
	}
	return s
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
	if m.Virtual {
		parts = append(parts, "virtual (across a page boundary)")
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
