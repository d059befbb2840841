package supervisor

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
)

// gateSource wraps a real source; while the gate is shut, reads block (a hung memory
// backend, or a scan stuck in the rule engine). It counts passes through Ranges (not the guest view's calls).
type gateSource struct {
	memscan.Source
	ranges atomic.Int32
	from   int64       // only reads at or above this address wait for the gate
	broken atomic.Bool // every read fails
	holdAt int32       // the pass with this number waits in Ranges until release is closed
	hold   chan struct{}

	mu   sync.Mutex
	gate chan struct{} // closed: open
}

// gatedOpen opens sources as OpenSource does, each wrapped in a gateSource (gate open;
// when shut, reads at or above from wait for it) stored in *g, since a resume opens a
// new one; more, if set, finishes the gateSource first.
func gatedOpen(g **gateSource, from int64, more func(*gateSource)) func(spec, layout string) (memscan.Source, error) {
	return func(spec, layout string) (memscan.Source, error) {
		s, err := OpenSource(spec, layout)
		if err != nil {
			return nil, err
		}
		gs := &gateSource{Source: s, gate: make(chan struct{}), from: from}
		if more != nil {
			more(gs)
		}
		*g = gs
		close(gs.gate)
		return gs, nil
	}
}

func (g *gateSource) Ranges() []memscan.Range {
	if fromGuestView() {
		return g.Source.Ranges()
	}
	if n := g.ranges.Add(1); n == g.holdAt {
		<-g.hold
	}
	return g.Source.Ranges()
}

// fromGuestView reports whether Ranges was called by memscan/linux (the guest view
// deriving a layout after a pass) rather than by a pass: only passes are counted.
func fromGuestView() bool {
	pc := make([]uintptr, 8)
	frames := runtime.CallersFrames(pc[:runtime.Callers(3, pc)])
	for {
		f, more := frames.Next()
		if strings.Contains(f.Function, "/memscan/linux.") {
			return true
		}
		if !more {
			return false
		}
	}
}

func (g *gateSource) ReadAt(p []byte, gpa int64) (int, error) {
	g.mu.Lock()
	c := g.gate
	g.mu.Unlock()
	if gpa >= g.from {
		<-c
	}
	if g.broken.Load() {
		return 0, errors.New("injected read failure")
	}
	return g.Source.ReadAt(p, gpa)
}

func (g *gateSource) shut() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *gateSource) open() {
	g.mu.Lock()
	select {
	case <-g.gate:
	default:
		close(g.gate)
	}
	g.mu.Unlock()
}

// TestNoOverlapAndWatchdog: a pass that hangs is never overlapped by the next one
// however much time passes; the watchdog pings stop once it has made no progress
// for the stall timeout and come back when it moves again.
func TestNoOverlapAndWatchdog(t *testing.T) {
	var g *gateSource
	open := gatedOpen(&g, 0, nil)
	h := newHarness(t, harnessOpts{open: open, watchdog: 100 * time.Millisecond})
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	h.waitFor("watchdog pings", func() bool { return h.notifiedCount("WATCHDOG=1") >= 2 })

	g.shut()
	h.clk.Advance(h.cfg.Memory.Interval) // starts pass 2, which hangs
	h.waitFor("pass 2 to start", func() bool { return g.ranges.Load() == 2 })
	for range 10 {
		h.clk.Advance(h.cfg.Memory.Interval)
		time.Sleep(20 * time.Millisecond)
	}
	if n := g.ranges.Load(); n != 2 {
		t.Fatalf("%d passes started while one hung, want 2 (no overlap)", n)
	}
	// 10 minutes of fake time without progress > stall_timeout (2m): pings stop.
	h.waitFor("stuck status", func() bool { return h.notifiedCount("STATUS=stuck") > 0 })
	before := h.notifiedCount("WATCHDOG=1")
	time.Sleep(400 * time.Millisecond)
	if after := h.notifiedCount("WATCHDOG=1"); after != before {
		t.Errorf("watchdog pinged %d times while the pass was stuck", after-before)
	}
	if err := h.sup.Healthy(); err == nil {
		t.Error("Healthy() = nil while stuck")
	}

	g.open()
	h.waitFor("pass 2 to finish", func() bool { return h.passes() >= 2 })
	// Overdue: the next pass starts at once, but only one.
	h.waitFor("pass 3", func() bool { return h.passes() >= 3 })
	time.Sleep(100 * time.Millisecond)
	if n := g.ranges.Load(); n != 3 {
		t.Errorf("%d passes after the hang, want 3 (missed ticks are not made up)", n)
	}
	h.waitFor("watchdog pings again", func() bool { return h.notifiedCount("WATCHDOG=1") > before })
}

// TestSourceFailureAlertedOnce: a memory source that fails every read is alerted once,
// not every pass, and its recovery is alerted too.
func TestSourceFailureAlertedOnce(t *testing.T) {
	var g *gateSource
	open := gatedOpen(&g, 0, nil)
	h := newHarness(t, harnessOpts{open: open})
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	g.broken.Store(true)
	for range 3 {
		n := g.ranges.Load()
		h.clk.Advance(h.cfg.Memory.Interval)
		h.waitFor("a failing pass", func() bool { return g.ranges.Load() > n && len(h.alerts.with("memory-source-pass-failed", "")) > 0 })
	}
	time.Sleep(50 * time.Millisecond)
	if k := len(h.alerts.with("memory-source-pass-failed", "")); k != 1 {
		t.Errorf("%d pass-failed alerts over 3 failing passes, want 1", k)
	}
	if k := len(h.alerts.with("memory-match-gone", "evil")); k != 0 {
		t.Error("a failed pass reported findings gone")
	}
	g.broken.Store(false)
	h.tick()
	if k := len(h.alerts.with("memory-source-recovered", "")); k != 1 {
		t.Errorf("%d recovered alerts, want 1:\n%s", k, h.alerts.dump())
	}
}
