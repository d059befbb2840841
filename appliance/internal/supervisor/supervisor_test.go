package supervisor

import (
	"testing"
)

// TestFindingLifecycle: a planted string is alerted once while it stays, its removal is
// alerted as gone with the same finding id, and a reappearance is new again.
func TestFindingLifecycle(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	news := h.alerts.with("memory-match", "evil")
	if len(news) != 1 || news[0].DomainM.State != "new" {
		t.Fatalf("after the first pass: %d evil alerts, want 1 new:\n%s", len(news), h.alerts.dump())
	}
	if m := news[0].DomainM.Matches; len(m) != 1 || m[0].Address != "0x300064" {
		t.Errorf("match addresses = %+v, want one at 0x300064", m)
	}
	h.tick()
	h.tick()
	if n := len(h.alerts.with("memory-match", "evil")); n != 1 {
		t.Errorf("still-present finding alerted %d times, want once", n)
	}
	h.erase(evilAt, len(evilText))
	h.tick()
	gone := h.alerts.with("memory-match-gone", "evil")
	if len(gone) != 1 {
		t.Fatalf("%d gone alerts, want 1:\n%s", len(gone), h.alerts.dump())
	}
	if !gone[0].Timestamp.After(news[0].Timestamp) {
		t.Errorf("gone alert time %v is not after the new alert's %v", gone[0].Timestamp, news[0].Timestamp)
	}
	if gone[0].DomainM.FindingID != news[0].DomainM.FindingID {
		t.Errorf("gone finding id %s differs from new %s", gone[0].DomainM.FindingID, news[0].DomainM.FindingID)
	}
	h.tick()
	if n := len(h.alerts.with("memory-match-gone", "evil")); n != 1 {
		t.Errorf("gone alerted %d times", n)
	}
	h.poke(evilAt+4096, evilText)
	h.tick()
	if n := len(h.alerts.with("memory-match", "evil")); n != 2 {
		t.Errorf("reappeared finding: %d new alerts in all, want 2:\n%s", n, h.alerts.dump())
	}
}

// TestRestartRemembersFindings: after a restart, a finding still present is not alerted
// again, and one that vanished while the supervisor was down is alerted gone.
func TestRestartRemembersFindings(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.writeRule("b.yar", ruleSec)
	h.waitFor("both found", func() bool {
		h.clk.Advance(h.cfg.Rules.Debounce) // the reload's debounce runs on the fake clock
		return len(h.alerts.with("memory-match", "evil")) == 1 && len(h.alerts.with("memory-match", "second")) == 1
	})
	h.restart()
	h.waitFor("first pass after restart", func() bool { return h.passes() >= 1 })
	if k := len(h.alerts.with("memory-match", "")); k != 0 {
		t.Errorf("%d findings re-alerted after a restart:\n%s", k, h.alerts.dump())
	}
	h.stop()
	h.erase(secondAt, len(second))
	h.restart()
	h.waitFor("second gone", func() bool { return len(h.alerts.with("memory-match-gone", "second")) == 1 })
	if k := len(h.alerts.with("memory-match", "")) + len(h.alerts.with("memory-match-gone", "evil")); k != 0 {
		t.Errorf("unexpected alerts after the second restart:\n%s", h.alerts.dump())
	}
}
