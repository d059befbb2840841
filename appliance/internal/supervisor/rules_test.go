package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/domainm/domainm/appliance/internal/alert"
)

// TestRulesHotReload drives the watcher with real file operations, as editors, git and
// operators make them, and checks what each does to the running set and the alerts.
func TestRulesHotReload(t *testing.T) {
	h := newHarness(t, harnessOpts{realClock: true, interval: time.Hour}) // only reloads start passes here
	h.waitFor("evil found", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })
	status := func() (string, int) {
		s := h.sup.Status(context.Background())
		return s.Rules, s.RuleCount
	}

	// An editor writes a temporary file and renames it into place.
	tmp := filepath.Join(h.rules, ".b.yar.swp")
	os.WriteFile(tmp, []byte(ruleSec), 0o644)
	if err := os.Rename(tmp, filepath.Join(h.rules, "b.yar")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("second found after rename into place", func() bool { return len(h.alerts.with("memory-match", "second")) == 1 })
	if n := len(h.alerts.with("rules-reloaded", "")); n != 1 {
		t.Errorf("%d reload alerts, want 1", n)
	}
	_, count := status()
	if count != 2 {
		t.Errorf("rule count %d, want 2", count)
	}

	// A new broken file: left out, an alert names file and line, the rules running
	// stay (the rest of the folder loads) and no finding ends.
	h.writeRule("c.yar", "rule ok { condition: true }\n\nrule broken { strings: $a = \"x\" condition: $b }\n")
	h.waitFor("rule error alert", func() bool { return len(h.alerts.with("rule-error", "")) > 0 })
	e := h.alerts.with("rule-error", "")[0]
	if want := filepath.Join(h.rules, "c.yar"); e.DomainM.RuleFile != want || e.DomainM.RuleLine != 3 {
		t.Errorf("rule error at %s:%d, want %s:3 (%s)", e.DomainM.RuleFile, e.DomainM.RuleLine, want, e.Message)
	}
	if !strings.Contains(e.Message, "c.yar:3") {
		t.Errorf("rule error message %q lacks file:line", e.Message)
	}
	if _, n := status(); n != 2 {
		t.Errorf("%d rules after a broken file was added, want the good 2 (c.yar left out)", n)
	}
	if p := problemText(h); !strings.Contains(p, "c.yar:3") {
		t.Errorf("health does not name the broken file:\n%s", p)
	}
	os.Remove(filepath.Join(h.rules, "c.yar"))
	h.waitFor("broken file removed", func() bool { return len(h.alerts.with("rules-error-cleared", "")) == 1 })
	if p := problemText(h); strings.Contains(p, "c.yar") {
		t.Errorf("health still names the removed file:\n%s", p)
	}
	if n := len(h.alerts.with("memory-match-gone", "")) + len(h.alerts.with("memory-match-retired", "")); n != 0 {
		t.Errorf("%d findings ended because of a broken file:\n%s", n, h.alerts.dump())
	}

	// A new subfolder, then a rule inside it: the subfolder gets its own watch.
	os.Mkdir(filepath.Join(h.rules, "sub"), 0o755)
	time.Sleep(300 * time.Millisecond) // debounce and the (no-op) reload
	h.writeRule("sub/third.yar", ruleThird)
	h.waitFor("third found via the new subfolder", func() bool { return len(h.alerts.with("memory-match", "third")) == 1 })
	if r := h.alerts.with("memory-match", "third")[0].Rule; r.Ruleset != "sub/third" {
		t.Errorf("namespace %q, want sub/third", r.Ruleset)
	}

	// git checkout replaces a file (unlink, create): evil's rule now matches nothing, but
	// the implant is still in memory: the finding is retired, not gone.
	os.Remove(filepath.Join(h.rules, "a.yar"))
	h.writeRule("a.yar", strings.ReplaceAll(ruleEvil, evilText, "NOT-IN-MEMORY-AT-ALL"))
	h.waitFor("evil retired", func() bool { return len(h.alerts.with("memory-match-retired", "evil")) == 1 })
	if r := h.alerts.with("memory-match-retired", "evil")[0].Event.Reason; r != "rule changed" {
		t.Errorf("evil retired with reason %q, want rule changed", r)
	}
	if n := len(h.alerts.with("memory-match-gone", "")); n != 0 {
		t.Errorf("%d findings reported gone after a rule change, though all is still in memory:\n%s", n, h.alerts.dump())
	}

	// Deleting every rule is alerted; the last good set keeps running and no finding ends
	// (TestEmptyFolderKeepsRules covers this in depth).
	os.RemoveAll(filepath.Join(h.rules, "sub"))
	os.Remove(filepath.Join(h.rules, "a.yar"))
	os.Remove(filepath.Join(h.rules, "b.yar"))
	h.waitFor("empty rule set alert", func() bool { return len(h.alerts.with("rules-empty-ruleset", "")) == 1 })
	if _, n := status(); n != 3 {
		t.Errorf("%d rules after deleting all, want the last good 3", n)
	}

	// Rules come back, but only a.yar: the other two rules are retired.
	h.writeRule("a.yar", ruleEvil)
	h.waitFor("evil found again", func() bool { return len(h.alerts.with("memory-match", "evil")) == 2 })
	h.waitFor("second and third retired", func() bool {
		return len(h.alerts.with("memory-match-retired", "second")) == 1 && len(h.alerts.with("memory-match-retired", "third")) == 1
	})
	if n := len(h.alerts.with("memory-match-gone", "")); n != 0 {
		t.Errorf("%d findings reported gone, none went away:\n%s", n, h.alerts.dump())
	}

	// The folder itself removed: alerted, the running set stays. Recreated (as a deploy
	// tool replacing it would): watched again, including files added later.
	if err := os.RemoveAll(h.rules); err != nil {
		t.Fatal(err)
	}
	h.waitFor("unreadable alert", func() bool { return len(h.alerts.with("rules-unreadable", "")) == 1 })
	if _, n := status(); n != 1 {
		t.Errorf("%d rules after the folder vanished, want the running 1", n)
	}
	os.Mkdir(h.rules, 0o755)
	time.Sleep(300 * time.Millisecond)
	h.writeRule("b.yar", ruleSec)
	h.waitFor("second found again in the recreated folder", func() bool { return len(h.alerts.with("memory-match", "second")) == 2 })
}

// TestRulesSymlinkSwap: the rules folder is a symlink that a deploy swaps atomically to
// a new release (ln -s v2 tmp; mv -T tmp rules); the new release is loaded and watched.
func TestRulesSymlinkSwap(t *testing.T) {
	base := t.TempDir()
	v1, v2 := filepath.Join(base, "v1"), filepath.Join(base, "v2")
	os.MkdirAll(v1, 0o755)
	os.MkdirAll(v2, 0o755)
	os.WriteFile(filepath.Join(v1, "a.yar"), []byte(ruleEvil), 0o644)
	os.WriteFile(filepath.Join(v2, "b.yar"), []byte(ruleSec), 0o644)
	link := filepath.Join(base, "rules")
	if err := os.Symlink(v1, link); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOpts{realClock: true, interval: time.Hour, rulesDir: link})
	h.waitFor("evil found through the symlink", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })

	tmp := filepath.Join(base, "rules.tmp")
	os.Symlink(v2, tmp)
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	h.waitFor("second found after the swap", func() bool { return len(h.alerts.with("memory-match", "second")) == 1 })
	h.waitFor("evil retired after the swap", func() bool { return len(h.alerts.with("memory-match-retired", "evil")) == 1 })
	if n := len(h.alerts.with("memory-match-gone", "evil")); n != 0 {
		t.Errorf("evil reported gone although only its rule went away")
	}
	// The new release is watched.
	os.WriteFile(filepath.Join(v2, "c.yar"), []byte(ruleThird), 0o644)
	h.waitFor("third found in the new release", func() bool { return len(h.alerts.with("memory-match", "third")) == 1 })
}

// TestReloadSwapsBetweenBlocks: a rule set reloaded while a pass is in flight is used
// from the next run of blocks a worker takes on (memscan.DriverConfig.Batch blocks,
// screened in one scan), within the same pass; a second pass follows at once for the
// blocks scanned before the swap. 64 KiB blocks make a run 1 MiB: the runs held at the
// gate (4 MiB) took the old set, the run with third (7 MiB) is taken after the reload.
func TestReloadSwapsBetweenBlocks(t *testing.T) {
	var g *gateSource
	open := gatedOpen(&g, 4<<20, func(g *gateSource) { g.holdAt, g.hold = 3, make(chan struct{}) })
	h := newHarness(t, harnessOpts{open: open, blockSize: 64 << 10})
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	const early = "EARLY-MARKER-3456"
	h.poke(1<<20+50, early) // block 1: scanned before the swap
	g.shut()
	h.clk.Advance(h.cfg.Memory.Interval) // pass 2 scans blocks 0-3, then waits at 4 MiB
	h.waitFor("pass 2 to start", func() bool { return g.ranges.Load() == 2 })

	// third lies at 7 MiB, past the blocks in flight.
	h.writeRule("c.yar", ruleThird+"rule early { strings: $a = \""+early+"\" condition: $a }\n")
	h.waitFor("reload", func() bool {
		h.clk.Advance(h.cfg.Rules.Debounce)
		return h.sup.Status(context.Background()).RuleCount == 3
	})
	g.open()
	h.waitFor("pass 2 to end", func() bool { return h.passes() == 2 })
	if k := len(h.alerts.with("memory-match", "third")); k != 1 {
		t.Errorf("third found %d times by the pass in flight at the reload, want 1:\n%s", k, h.alerts.dump())
	}
	if k := len(h.alerts.with("memory-match", "early")); k != 0 {
		t.Errorf("early found by pass 2, whose block 1 was scanned before the reload")
	}
	// Pass 3 starts at once (no clock advance) and finds what pass 2 scanned too early.
	h.waitFor("pass 3 to start", func() bool { return g.ranges.Load() == 3 })
	close(g.hold)
	h.waitFor("early found by the follow-up pass", func() bool { return len(h.alerts.with("memory-match", "early")) == 1 })
	time.Sleep(50 * time.Millisecond)
	if n := g.ranges.Load(); n != 3 {
		t.Errorf("%d passes, want 3", n)
	}
}

// problemText returns the health problems' messages, one a line.
func problemText(h *harness) string {
	st := h.sup.Status(context.Background())
	if st.Health == nil {
		return ""
	}
	var b strings.Builder
	for _, p := range st.Health.Problems {
		b.WriteString(p.Code + ": " + p.Message + "\n")
	}
	return b.String()
}

// TestStartWithBrokenRuleFile: a rules file that does not compile at start is left out,
// the rest of the folder loads and detects in the target's RAM, and the broken file is
// alerted with FILE:LINE and shows in the health until it is fixed.
func TestStartWithBrokenRuleFile(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "rules")
	os.MkdirAll(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "a.yar"), []byte(ruleEvil), 0o644)
	os.WriteFile(filepath.Join(rules, "bad.yar"), []byte("rule ok { condition: false }\n\nrule bad { strings: $a = \"x\" condition: $b }\n"), 0o644)
	h := newHarness(t, harnessOpts{realClock: true, interval: time.Hour, rulesDir: rules})
	h.waitFor("evil found with a broken file beside it", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })
	errs := h.alerts.with("rule-error", "")
	if len(errs) != 1 {
		t.Fatalf("%d rule-error alerts, want 1:\n%s", len(errs), h.alerts.dump())
	}
	e := errs[0]
	if want := filepath.Join(rules, "bad.yar"); e.DomainM.RuleFile != want || e.DomainM.RuleLine != 3 {
		t.Errorf("rule error at %s:%d, want %s:3", e.DomainM.RuleFile, e.DomainM.RuleLine, want)
	}
	if !strings.Contains(e.Message, "bad.yar:3") || !strings.Contains(e.Message, "left out") || e.Severity() != alert.SevHigh {
		t.Errorf("rule error %q (severity %v): want bad.yar:3, left out, high", e.Message, e.Severity())
	}
	if tg := e.DomainM.Target; tg == nil || tg.Name != "t1" {
		t.Errorf("rule error at start does not name the target: %+v", tg)
	}
	if n := h.sup.Status(context.Background()).RuleCount; n != 1 {
		t.Errorf("%d rules loaded, want evil's 1", n)
	}
	if p := problemText(h); !strings.Contains(p, "bad.yar:3") {
		t.Errorf("health does not name the broken file:\n%s", p)
	}

	// Fixed: loaded, the problem clears and an event says so.
	os.WriteFile(filepath.Join(rules, "bad.yar"), []byte(ruleSec), 0o644)
	h.waitFor("second found once bad.yar is fixed", func() bool { return len(h.alerts.with("memory-match", "second")) == 1 })
	h.waitFor("fixed alert", func() bool { return len(h.alerts.with("rules-error-cleared", "")) == 1 })
	if p := problemText(h); strings.Contains(p, "bad.yar") {
		t.Errorf("health still names the fixed file:\n%s", p)
	}
	if n := len(h.alerts.with("rule-error", "")); n != 1 {
		t.Errorf("%d rule-error alerts, want the broken file alerted once", n)
	}
}

// TestBrokenRuleFileKeepsLastGood: a rules file that was good and is broken at runtime
// keeps running in its last good version (its rule still detects new content, its
// finding does not end), while the other changes of the same reload load; fixing it
// clears the problem.
func TestBrokenRuleFileKeepsLastGood(t *testing.T) {
	const more = "SECOND-MORE-CONTENT-4242"
	good := "rule second { strings: $a = \"" + second + "\" $b = \"" + more + "\" condition: any of them }\n"
	h := newHarness(t, harnessOpts{realClock: true, interval: time.Hour})
	h.writeRule("b.yar", good)
	h.waitFor("second found", func() bool { return len(h.alerts.with("memory-match", "second")) == 1 })
	goodID := h.sup.Status(context.Background()).Rules

	// Broken (a typo, or an attacker), and a new good file in the same change.
	h.writeRule("b.yar", good+"\nrule typo { condition: $nope }\n")
	h.writeRule("c.yar", ruleThird)
	h.waitFor("rule error", func() bool { return len(h.alerts.with("rule-error", "")) == 1 })
	e := h.alerts.with("rule-error", "")[0]
	if !strings.Contains(e.Message, "b.yar:3") || !strings.Contains(e.Message, "last good version") {
		t.Errorf("rule error %q: want b.yar:3 and that the last good version keeps running", e.Message)
	}
	h.waitFor("third loaded beside the broken file", func() bool { return len(h.alerts.with("memory-match", "third")) == 1 })
	if st := h.sup.Status(context.Background()); st.RuleCount != 3 || st.Rules == goodID {
		t.Errorf("%d rules (%s), want evil, second (last good) and third", st.RuleCount, st.Rules)
	}
	if p := problemText(h); !strings.Contains(p, "b.yar:3") || !strings.Contains(p, "last good") {
		t.Errorf("health does not name the broken file and its last good version:\n%s", p)
	}
	// The set with the last good version is profiled like any other (its files are
	// read again for it).
	h.waitFor("the set profiled, the kept file among them", func() bool {
		return testutil.CollectAndCount(h.sup.m.ruleFileSeconds) == 3 &&
			testutil.ToFloat64(h.sup.m.ruleFileSeconds.WithLabelValues("b.yar")) > 0
	})
	// second's rule still runs: new content of it is alerted, nothing ends.
	h.poke(6<<20+77, more)
	h.sup.ReloadRules() // a reload that changes nothing does not start a pass; touch a file
	h.writeRule("d.yar", "rule dd { strings: $a = \"DD-NOT-THERE-000\" condition: $a }\n")
	h.waitFor("second's new content", func() bool { return len(h.alerts.with("memory-match-updated", "second")) == 1 })
	for _, a := range []string{"memory-match-gone", "memory-match-retired"} {
		if n := len(h.alerts.with(a, "")); n != 0 {
			t.Errorf("%d %s alerts while the last good version runs:\n%s", n, a, h.alerts.dump())
		}
	}
	if n := len(h.alerts.with("rule-error", "")); n != 1 {
		t.Errorf("%d rule-error alerts for one broken file across reloads, want 1", n)
	}

	// Fixed: the problem clears, an event says so.
	h.writeRule("b.yar", good)
	h.waitFor("fixed alert", func() bool { return len(h.alerts.with("rules-error-cleared", "")) == 1 })
	if p := problemText(h); strings.Contains(p, "b.yar") {
		t.Errorf("health still names the fixed file:\n%s", p)
	}
	if n := len(h.alerts.with("memory-match-retired", "")) + len(h.alerts.with("memory-match-gone", "")); n != 0 {
		t.Errorf("%d findings ended:\n%s", n, h.alerts.dump())
	}
}

// TestBrokenRuleFileLastGoodAfterRestart: a rule file broken while the daemon was down
// runs in its last good version after the restart (kept in the state folder): its
// finding, restored from the state folder, is neither retired nor gone.
func TestBrokenRuleFileLastGoodAfterRestart(t *testing.T) {
	h := newHarness(t, harnessOpts{realClock: true, interval: time.Hour})
	h.writeRule("b.yar", ruleSec)
	h.waitFor("second found", func() bool { return len(h.alerts.with("memory-match", "second")) == 1 })
	h.stop()
	h.writeRule("b.yar", ruleSec+"\nrule typo { condition: $nope }\n")
	h.alerts = &recorder{}
	h.deps.Alerts = h.alerts
	h.start()
	h.waitFor("rule error", func() bool { return len(h.alerts.with("rule-error", "")) == 1 })
	if e := h.alerts.with("rule-error", "")[0]; !strings.Contains(e.Message, "b.yar:3") || !strings.Contains(e.Message, "last good version") {
		t.Errorf("rule error %q: want b.yar:3 and that the last good version keeps running", e.Message)
	}
	if n := h.sup.Status(context.Background()).RuleCount; n != 2 {
		t.Errorf("%d rules after the restart, want evil and second (last good)", n)
	}
	h.waitFor("a pass after the restart", func() bool { return h.passes() >= 1 })
	for _, a := range []string{"memory-match-gone", "memory-match-retired", "memory-match"} {
		if n := len(h.alerts.with(a, "")); n != 0 {
			t.Errorf("%d %s alerts after a restart with a broken file that was good:\n%s", n, a, h.alerts.dump())
		}
	}
}

// TestBrokenIncludedFileKeepsLastGood: a file included by another breaks; the includer
// keeps running in its last good version with the include's last good text, and the
// error names the included file and line.
func TestBrokenIncludedFileKeepsLastGood(t *testing.T) {
	rules := filepath.Join(t.TempDir(), "rules")
	os.MkdirAll(filepath.Join(rules, "inc"), 0o755)
	os.WriteFile(filepath.Join(rules, "index.yar"), []byte("include \"inc/common.yar\"\n"), 0o644)
	os.WriteFile(filepath.Join(rules, "inc", "common.yar"), []byte(ruleEvil), 0o644)
	h := newHarness(t, harnessOpts{realClock: true, interval: time.Hour, rulesDir: rules})
	h.waitFor("evil found through the include", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })

	os.WriteFile(filepath.Join(rules, "inc", "common.yar"), []byte(ruleEvil+"rule typo { condition: $nope }\n"), 0o644)
	h.writeRule("c.yar", ruleThird)
	h.waitFor("third loaded", func() bool { return len(h.alerts.with("memory-match", "third")) == 1 })
	errs := h.alerts.with("rule-error", "")
	if len(errs) != 1 || errs[0].DomainM.RuleFile != filepath.Join(rules, "inc", "common.yar") || errs[0].DomainM.RuleLine != 2 ||
		!strings.Contains(errs[0].Message, "last good version") {
		t.Fatalf("rule errors, want one at inc/common.yar:2 saying the last good version runs:\n%s", h.alerts.dump())
	}
	if n := h.sup.Status(context.Background()).RuleCount; n != 2 {
		t.Errorf("%d rules, want evil (last good) and third", n)
	}
	if p := problemText(h); !strings.Contains(p, "common.yar:2") {
		t.Errorf("health does not name the broken include:\n%s", p)
	}
	if n := len(h.alerts.with("memory-match-retired", "")) + len(h.alerts.with("memory-match-gone", "")); n != 0 {
		t.Errorf("%d findings ended:\n%s", n, h.alerts.dump())
	}
	os.WriteFile(filepath.Join(rules, "inc", "common.yar"), []byte(ruleEvil), 0o644)
	h.waitFor("fixed", func() bool { return len(h.alerts.with("rules-error-cleared", "")) == 1 })
	if p := problemText(h); p != "" {
		t.Errorf("health problems after the fix:\n%s", p)
	}
}

// TestOnlyBrokenFilesLeft: the folder's only good file is replaced by a new file that
// does not compile: nothing would load, so the last good set keeps running (as for an
// emptied folder), and both the broken file and the folder are named in the health.
func TestOnlyBrokenFilesLeft(t *testing.T) {
	h := newHarness(t, harnessOpts{realClock: true, interval: time.Hour})
	h.waitFor("evil found", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })
	os.Remove(filepath.Join(h.rules, "a.yar"))
	h.writeRule("new.yar", "rule n { condition: $x }\n")
	h.waitFor("empty and error", func() bool {
		return len(h.alerts.with("rules-empty-ruleset", "")) == 1 && len(h.alerts.with("rule-error", "")) == 1
	})
	if m := h.alerts.with("rules-empty-ruleset", "")[0].Message; !strings.Contains(m, "no rules that compile") {
		t.Errorf("empty-ruleset alert %q: want that no rules compile", m)
	}
	if n := h.sup.Status(context.Background()).RuleCount; n != 1 {
		t.Errorf("%d rules, want the last good set's 1", n)
	}
	if p := problemText(h); !strings.Contains(p, "new.yar:1") || !strings.Contains(p, "last good set") {
		t.Errorf("health should name the broken file and the last good set:\n%s", p)
	}
	if n := len(h.alerts.with("memory-match-retired", "")) + len(h.alerts.with("memory-match-gone", "")); n != 0 {
		t.Errorf("%d findings ended:\n%s", n, h.alerts.dump())
	}
}
