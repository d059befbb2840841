package supervisor

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan/linux"
)

// Kernel-integrity checks (memscan/linux: system-call tables, IDT, hidden modules,
// hidden tasks) run after every memory pass that ended without error, on the same
// source, in the pass goroutine, with the layout the guest view derived for
// attribution (guest.go: once per source, again after resume). Their findings are
// alerted when they appear and when a later check no longer sees them, like the memory
// findings; a check that could not run decides nothing about its findings. The
// reported findings are saved in the state folder, so a restart does not alert them
// again.

const kernelStateFile = "kernel-findings.json"

// kernelView runs the checks and remembers which kernel it last saw, so that the
// layout derived again after a resume is compared with the one before. Used by the
// pass goroutine only (passes never overlap).
type kernelView struct {
	in      *linux.Inspector // the layout the last check used
	release string
	textVA  uint64
}

// seen records the layout a check uses and, when it is newly derived (after a resume,
// or a source replaced), says how its kernel differs from the one before ("" if not:
// the same release at the same KASLR-shifted _text).
func (v *kernelView) seen(in *linux.Inspector) string {
	if in == v.in {
		return ""
	}
	var changed string
	if v.in != nil && (in.K.Release != v.release || in.K.TextVA != v.textVA) {
		changed = fmt.Sprintf("kernel %s with _text at %#x, was %s at %#x", in.K.Release, in.K.TextVA, v.release, v.textVA)
	}
	v.in, v.release, v.textVA = in, in.K.Release, in.K.TextVA
	return changed
}

// kernelNote is what one pass's checks did, for the loop.
type kernelNote struct {
	ran     bool
	release string
	changed string // the kernel differs from the one checked before (how)
	results []linux.CheckResult
	procs   int
	mods    int
	took    time.Duration // listing and checking
	err     error         // why no check ran (no layout, or a list could not be read)
}

// check runs the checks with g's layout (nil: unknown; the guest view says why).
func (v *kernelView) check(g *linux.Guest) kernelNote {
	var n kernelNote
	if g == nil {
		n.err = errors.New("no guest layout")
		return n
	}
	in := g.In
	n.changed = v.seen(in)
	n.release = in.K.Release
	t0 := time.Now()
	procs, err := in.Processes()
	if err != nil {
		n.err = fmt.Errorf("task list: %w", err)
		return n
	}
	mods, err := in.Modules()
	if err != nil {
		n.err = fmt.Errorf("module list: %w", err)
		return n
	}
	n.results = in.Integrity(procs, mods)
	n.ran, n.procs, n.mods, n.took = true, len(procs), len(mods), time.Since(t0)
	return n
}

// kernelTracker holds the kernel findings reported and still present, by key.
type kernelTracker struct {
	known map[string]linux.Finding
}

// update applies one pass's results: findings not known before are returned as
// added; known ones of a check that ran and no longer found them as gone.
func (t *kernelTracker) update(rs []linux.CheckResult) (added, gone []linux.Finding) {
	for _, r := range rs {
		seen := map[string]bool{}
		for _, f := range r.Findings {
			seen[f.Key] = true
			if _, ok := t.known[f.Key]; !ok {
				t.known[f.Key] = f
				added = append(added, f)
			}
		}
		if r.Err != "" {
			continue // could not look: its findings stay as they are
		}
		for _, k := range slices.Sorted(maps.Keys(t.known)) {
			if f := t.known[k]; f.Check == r.Check && !seen[k] {
				gone = append(gone, f)
				delete(t.known, k)
			}
		}
	}
	return added, gone
}

// kernelNoted logs, alerts and saves what a pass's checks found (memory loop only).
func (m *memLoop) kernelNoted(n kernelNote) {
	now := m.s.clk.Now()
	if n.changed != "" {
		m.s.log.Warn("the kernel differs from the one checked before", "now", n.changed)
		m.s.emitAsync(alert.Health(now, alert.SevMedium, "kernel", "changed",
			fmt.Sprintf("the kernel of %s differs from the one checked before (resume or reboot): %s", m.s.currentTarget().Name, n.changed)))
	}
	if !n.ran {
		if n.err != nil && n.release != "" {
			m.s.log.Warn("kernel-integrity checks did not run this pass", "err", n.err)
		}
		return
	}
	for _, r := range n.results {
		if r.Err != "" {
			m.s.log.Warn("kernel-integrity check failed", "check", r.Check, "err", r.Err)
		}
	}
	added, gone := m.ktrack.update(n.results)
	t := m.s.currentTarget()
	var evs []alert.Event
	for _, f := range added {
		evs = append(evs, alert.KernelFinding(now, t, f.Check, f.Key, f.Summary, f.Evidence, alert.StateNew))
	}
	for _, f := range gone {
		evs = append(evs, alert.KernelFinding(now, t, f.Check, f.Key, f.Summary, f.Evidence, alert.StateGone))
	}
	m.s.emitAll(evs)
	if len(evs) > 0 {
		m.s.saveKernel(m.ktrack)
	}
	m.s.log.Info("kernel-integrity checks", "processes", n.procs, "modules", n.mods, "findings", len(m.ktrack.known),
		"new", len(added), "gone", len(gone), "took", n.took)
}

type kernelState struct {
	Target   detectors.Target `json:"target"`
	Findings []linux.Finding  `json:"findings"`
}

func (s *Supervisor) restoreKernel() *kernelTracker {
	t := &kernelTracker{known: map[string]linux.Finding{}}
	var st kernelState
	ok, err := loadJSON(s.statePath(kernelStateFile), &st)
	switch {
	case err != nil:
		s.log.Warn("ignoring saved kernel findings", "err", err)
	case ok && !sameTarget(st.Target, s.currentTarget()):
		s.log.Warn("ignoring saved kernel findings of another target", "saved", st.Target.Name)
	case ok:
		for _, f := range st.Findings {
			t.known[f.Key] = f
		}
	}
	return t
}

func (s *Supervisor) saveKernel(t *kernelTracker) {
	st := kernelState{Target: s.currentTarget(), Findings: []linux.Finding{}}
	for _, k := range slices.Sorted(maps.Keys(t.known)) {
		st.Findings = append(st.Findings, t.known[k])
	}
	if err := saveJSON(s.statePath(kernelStateFile), st); err != nil {
		s.log.Error("saving kernel findings", "err", err)
	}
}
