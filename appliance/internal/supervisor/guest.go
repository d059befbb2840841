package supervisor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/linux"
)

// guestRetryPasses is how many passes go by before deriving an unknown guest layout
// again (the guest may still be booting, or not be Linux at all: Find reads all RAM).
const guestRetryPasses = 10

// guestView names who holds each memory match (memscan/linux): the guest's layout is
// derived once per memory source (at its first pass, and again after a resume, which
// may bring another guest), its processes and modules are listed again every pass.
//
// It is used by the pass goroutine only; passes never overlap, and reset runs in the
// loop goroutine while no pass does (the pass's outcome channel orders the two).
type guestView struct {
	g     *linux.Guest
	err   error // why the layout is unknown
	since int   // passes since the last attempt while unknown
	// seams scans the guest's virtual address spaces across seams (page boundaries not
	// physically adjacent), remembering unchanged windows from pass to pass.
	seams *memscan.SeamScanner

	mu sync.Mutex
	st proto.GuestStatus // for status: set after each pass, cleared by reset
}

// guestNote is what a pass's attribution did, for the loop to log and alert.
type guestNote struct {
	derived   bool // the layout was derived in this pass
	failed    bool // deriving it failed in this pass
	release   string
	layout    time.Duration // deriving the layout
	took      time.Duration // listing processes and modules
	processes int
	err       error // the layout's, or the listing's
	virtual   linux.VirtualStats
	vtook     time.Duration // attributing and the virtual scan
	verr      error         // the virtual scan's
}

// reset forgets the layout and the seams' windows (a new source: resume, or the target
// restarted).
func (v *guestView) reset() {
	if v.seams != nil {
		v.seams.Forget()
	}
	v.g, v.err, v.since = nil, nil, 0
	v.mu.Lock()
	v.st = proto.GuestStatus{}
	v.mu.Unlock()
}

// status is the guest's layout for domainm status.
func (v *guestView) status() proto.GuestStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.st
}

// noted keeps what a pass over source found of the guest for status.
func (v *guestView) noted(n guestNote, source string, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case n.derived:
		v.st = proto.GuestStatus{OS: "linux", Kernel: n.release, Source: source, DerivedAt: now.UTC().Format(time.RFC3339Nano)}
	case n.failed:
		v.st = proto.GuestStatus{OS: "unknown", Source: source, DerivedAt: now.UTC().Format(time.RFC3339Nano), Error: n.err.Error()}
	}
	if n.release != "" {
		v.st.Processes, v.st.Seams, v.st.Error = n.processes, n.virtual.Seams, ""
		if n.err != nil {
			v.st.Error = n.err.Error()
		} else if n.verr != nil {
			v.st.Error = n.verr.Error()
		}
	}
}

// annotate attributes res's matches (in place), then scans the guest's seams with rules
// and adds what crosses them to res.Matches, and says what it did. A layout that
// cannot be derived is tried again every guestRetryPasses passes.
func (v *guestView) annotate(ctx context.Context, src memscan.Source, res *memscan.PassResult, rules memscan.RuleSet, cfg memscan.DriverConfig) guestNote {
	var n guestNote
	if v.g == nil {
		if v.err != nil {
			if v.since++; v.since < guestRetryPasses {
				n.err = v.err
				return n
			}
		}
		v.since = 0
		g, err := linux.OpenGuest(passSource{src, res.Unchanged})
		if err != nil {
			v.err = err
			n.failed, n.err = true, err
			return n
		}
		v.g, v.err = g, nil
		n.derived, n.layout = true, g.Took
	}
	n.release = v.g.In.K.Release
	t0 := time.Now()
	snap, err := v.g.Snapshot()
	if err == nil {
		snap.Since(res.Unchanged) // address spaces and seams in unchanged blocks are not read again
	}
	n.took = time.Since(t0)
	if err != nil {
		n.err = fmt.Errorf("listing the guest's processes: %w", err)
		return n
	}
	n.processes = len(snap.Tasks)
	if v.seams == nil {
		v.seams = memscan.NewSeamScanner(0, cfg.Workers, cfg.ReusePasses)
	}
	// One walk of the page tables finds the seams and attributes the physical matches.
	t1 := time.Now()
	res.Matches, n.virtual, n.verr = snap.ScanVirtual(ctx, src, v.seams, rules, res.Matches)
	n.vtook = time.Since(t1)
	if n.verr == nil && len(n.virtual.Errors) > 0 {
		n.verr = fmt.Errorf("%d seams not scanned; first: %w", len(n.virtual.Errors), n.virtual.Errors[0])
	}
	return n
}

// passSource is the pass's source, whose ranges are those the pass used: deriving the
// layout does not ask the source for them again (a Xen source asks the hypervisor; the
// schedule tests count passes by it).
type passSource struct {
	memscan.Source
	pass *memscan.BlockSet
}

func (p passSource) Ranges() []memscan.Range {
	if p.pass == nil {
		return p.Source.Ranges()
	}
	return p.pass.Ranges()
}

// guestNoted logs what a pass's attribution did and alerts once when the layout of a
// source turns out unknown (memory loop only).
func (m *memLoop) guestNoted(n guestNote) {
	m.guest.noted(n, m.s.currentTarget().Source, m.s.clk.Now())
	switch {
	case n.derived:
		m.s.log.Info("guest layout derived: memory matches name the processes holding them",
			"kernel", n.release, "took", n.layout)
	case n.failed:
		m.s.log.Warn("guest layout unknown: memory matches carry guest-physical addresses only", "err", n.err,
			"retry_in_passes", guestRetryPasses)
		if !m.guestAlerted {
			m.guestAlerted = true
			m.s.emitAsync(alert.Health(m.s.clk.Now(), alert.SevLow, "memory", "guest-layout-unknown",
				fmt.Sprintf("memory matches on %s are not attributed to guest processes: no Linux layout found in its memory (%v)",
					m.s.currentTarget().Name, n.err)))
		}
		return
	}
	if n.release != "" {
		m.s.log.Debug("memory matches attributed", "processes", n.processes, "took", n.took, "err", n.err)
		if n.err != nil {
			m.s.log.Warn("memory matches not attributed this pass", "err", n.err)
		}
		v := n.virtual
		m.s.log.Debug("virtual scan", "seams", v.Seams, "scanned", v.Scanned, "unchanged", v.Unchanged, "zero", v.Zero,
			"bytes", v.Bytes, "page_tables", v.Tables, "matches", v.Matches, "took", n.vtook)
		if n.verr != nil {
			m.s.log.Warn("virtual scan incomplete: strings across page boundaries may be missed this pass", "err", n.verr)
		}
	}
}
