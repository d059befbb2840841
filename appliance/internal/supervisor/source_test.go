package supervisor

import (
	"os"
	"testing"
	"time"
)

// TestSourceReplacedAndGone: the target VM restarting (a new RAM file at the same path)
// is followed; its RAM file removed is alerted once and passes stop until it is back.
func TestSourceReplacedAndGone(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.waitFor("evil found", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })
	h.waitFor("first pass", func() bool { return h.passes() == 1 }) // counted after its alerts

	// A new file renamed over the old one, without the implant.
	tmp := h.ram + ".new"
	f, _ := os.Create(tmp)
	f.Truncate(ramSize)
	f.Close()
	if err := os.Rename(tmp, h.ram); err != nil {
		t.Fatal(err)
	}
	h.tick()
	if k := len(h.alerts.with("memory-source-replaced", "")); k != 1 {
		t.Errorf("%d replaced alerts, want 1:\n%s", k, h.alerts.dump())
	}
	if k := len(h.alerts.with("memory-match-gone", "evil")); k != 1 {
		t.Errorf("the old guest's finding: %d gone alerts, want 1", k)
	}

	// Removed: alerted once, no passes.
	os.Remove(h.ram)
	n := h.passes()
	for range 3 {
		h.clk.Advance(h.cfg.Memory.Interval)
		time.Sleep(20 * time.Millisecond)
	}
	h.waitFor("gone alert", func() bool { return len(h.alerts.with("memory-source-gone", "")) == 1 })
	time.Sleep(50 * time.Millisecond)
	if k := len(h.alerts.with("memory-source-gone", "")); k != 1 || h.passes() != n {
		t.Errorf("%d gone alerts and %d passes while the file was missing, want 1 and 0", k, h.passes()-n)
	}

	// Back, with the implant: reopened and found.
	f, _ = os.Create(tmp)
	f.Truncate(ramSize)
	f.WriteAt([]byte(evilText), 6<<20)
	f.Close()
	os.Rename(tmp, h.ram)
	h.tick()
	if len(h.alerts.with("memory-source-back", "")) != 1 || len(h.alerts.with("memory-match", "evil")) != 2 {
		t.Errorf("after the file came back:\n%s", h.alerts.dump())
	}
}
