package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// reloadDone advances the fake clock through the rules debounce until cond holds.
func (h *harness) reloadDone(what string, cond func() bool) {
	h.t.Helper()
	h.waitFor(what, func() bool {
		h.clk.Advance(h.cfg.Rules.Debounce)
		return cond()
	})
}

func (h *harness) ruleCount() int { return h.sup.Status(context.Background()).RuleCount }

// TestRuleRemovedRetires: deleting one rule file ends its findings as retired ("rule
// removed"), not gone, while the content is still in memory; the others stay.
func TestRuleRemovedRetires(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.writeRule("b.yar", ruleSec)
	h.reloadDone("both found", func() bool {
		return len(h.alerts.with("memory-match", "evil")) == 1 && len(h.alerts.with("memory-match", "second")) == 1
	})
	newSecond := h.alerts.with("memory-match", "second")[0]
	os.Remove(filepath.Join(h.rules, "b.yar"))
	h.reloadDone("second retired", func() bool { return len(h.alerts.with("memory-match-retired", "second")) == 1 })
	r := h.alerts.with("memory-match-retired", "second")[0]
	if r.Event.Reason != "rule removed" || r.DomainM.FindingID != newSecond.DomainM.FindingID || r.DomainM.State != "retired" {
		t.Errorf("retired: reason %q finding %s state %s, want rule removed, %s, retired", r.Event.Reason, r.DomainM.FindingID, r.DomainM.State, newSecond.DomainM.FindingID)
	}
	h.tick()
	h.tick()
	if n := len(h.alerts.with("memory-match-gone", "")); n != 0 {
		t.Errorf("%d gone alerts, though nothing left memory:\n%s", n, h.alerts.dump())
	}
	h.quiet("evil", 1, "evil's rule stayed")
	if c := testutil.ToFloat64(h.sup.m.findingsEnded.WithLabelValues("retired")); c != 1 {
		t.Errorf("domainm_findings_ended_total{how=retired} = %v, want 1", c)
	}
}

// TestRuleRemovedWhileDown: a rule file removed while the supervisor was stopped retires
// its finding at the next start.
func TestRuleRemovedWhileDown(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.writeRule("b.yar", ruleSec)
	h.reloadDone("second found", func() bool { return len(h.alerts.with("memory-match", "second")) == 1 })
	h.stop()
	os.Remove(filepath.Join(h.rules, "b.yar"))
	h.restart()
	h.waitFor("second retired at start", func() bool { return len(h.alerts.with("memory-match-retired", "second")) == 1 })
	h.tick()
	if n := len(h.alerts.with("memory-match-gone", "")) + len(h.alerts.with("memory-match", "")); n != 0 {
		t.Errorf("unexpected alerts after the restart:\n%s", h.alerts.dump())
	}
}

// TestEmptyFolderKeepsRules: emptying the rules folder keeps the last good set running
// (a threat that leaves memory is still seen to go), ends no finding, is alerted and
// unhealthy; putting the files back alerts nothing as new. The same holds across a
// restart with an empty folder, when there is no last good set.
func TestEmptyFolderKeepsRules(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.writeRule("b.yar", ruleSec)
	h.writeRule("c.yar", ruleThird)
	h.reloadDone("all found", func() bool { return len(h.alerts.with("memory-match", "")) == 3 })

	for _, f := range []string{"a.yar", "b.yar", "c.yar"} {
		os.Remove(filepath.Join(h.rules, f))
	}
	h.reloadDone("empty folder alerted", func() bool { return len(h.alerts.with("rules-empty-ruleset", "")) == 1 })
	e := h.alerts.with("rules-empty-ruleset", "")[0]
	if !strings.Contains(e.Message, "last good set (3 rules") {
		t.Errorf("empty alert %q does not say the last good set runs", e.Message)
	}
	if n := h.ruleCount(); n != 3 {
		t.Errorf("%d rules running with an empty folder, want the last good 3", n)
	}
	if err := h.sup.Healthy(); err == nil || !strings.Contains(err.Error(), "holds no rules") {
		t.Errorf("Healthy() = %v with an empty rules folder, want it unhealthy", err)
	}
	if v := testutil.ToFloat64(h.sup.m.rulesEmpty); v != 1 {
		t.Errorf("domainm_rules_folder_empty = %v, want 1", v)
	}
	h.tick()
	h.erase(thirdAt, len(third)) // the running set still sees a threat leave
	h.tick()
	if n := len(h.alerts.with("memory-match-gone", "third")); n != 1 {
		t.Errorf("third erased under the last good set: %d gone alerts, want 1:\n%s", n, h.alerts.dump())
	}
	if n := len(h.alerts.with("memory-match-gone", "")) + len(h.alerts.with("memory-match-retired", "")); n != 1 {
		t.Errorf("an empty folder ended findings:\n%s", h.alerts.dump())
	}

	h.writeRule("a.yar", ruleEvil)
	h.writeRule("b.yar", ruleSec)
	h.writeRule("c.yar", ruleThird)
	h.reloadDone("rules restored", func() bool { return len(h.alerts.with("rules-restored", "")) == 1 })
	h.tick()
	if n := len(h.alerts.with("memory-match", "")); n != 3 {
		t.Errorf("putting the files back: %d memory-match alerts in all, want the first 3:\n%s", n, h.alerts.dump())
	}
	if err := h.sup.Healthy(); err != nil && strings.Contains(err.Error(), "rules") {
		t.Errorf("Healthy() = %v after the files came back", err)
	}

	// A start with an empty folder: nothing to run, nothing ends, nothing re-alerted
	// once the rules are back.
	h.stop()
	for _, f := range []string{"a.yar", "b.yar", "c.yar"} {
		os.Remove(filepath.Join(h.rules, f))
	}
	h.restart()
	h.tick()
	if n := len(h.alerts.with("rules-empty-ruleset", "")); n != 1 {
		t.Errorf("start with an empty folder: %d empty alerts, want 1", n)
	}
	h.writeRule("a.yar", ruleEvil)
	h.writeRule("b.yar", ruleSec)
	h.reloadDone("rules back after the restart", func() bool { return h.ruleCount() == 2 })
	h.tick()
	if n := len(h.alerts.with("memory-match", "")) + len(h.alerts.with("memory-match-gone", "")); n != 0 {
		t.Errorf("after a start with an empty folder and the rules back:\n%s", h.alerts.dump())
	}
	if n := len(h.alerts.with("memory-match-retired", "")); n != 0 {
		t.Errorf("%d findings retired, though their rules are back:\n%s", n, h.alerts.dump())
	}
}
