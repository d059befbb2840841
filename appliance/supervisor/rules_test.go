package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
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
	goodID, count := status()
	if count != 2 {
		t.Errorf("rule count %d, want 2", count)
	}

	// A broken file: not loaded, an alert names file and line, the old set keeps working.
	h.writeRule("c.yar", "rule ok { condition: true }\n\nrule broken { strings: $a = \"x\" condition: $b }\n")
	h.waitFor("rule error alert", func() bool { return len(h.alerts.with("rule-error", "")) > 0 })
	e := h.alerts.with("rule-error", "")[0]
	if want := filepath.Join(h.rules, "c.yar"); e.DomainM.RuleFile != want || e.DomainM.RuleLine != 3 {
		t.Errorf("rule error at %s:%d, want %s:3 (%s)", e.DomainM.RuleFile, e.DomainM.RuleLine, want, e.Message)
	}
	if !strings.Contains(e.Message, "c.yar:3") {
		t.Errorf("rule error message %q lacks file:line", e.Message)
	}
	if id, _ := status(); id != goodID {
		t.Errorf("rule set changed to %s after a failed compile", id)
	}
	os.Remove(filepath.Join(h.rules, "c.yar"))

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
// from the next block on, within the same pass; a second pass follows at once for the
// blocks scanned before the swap.
func TestReloadSwapsBetweenBlocks(t *testing.T) {
	var g *gateSource
	open := func(spec, layout string) (memscan.Source, error) {
		s, err := OpenSource(spec, layout)
		if err != nil {
			return nil, err
		}
		g = &gateSource{Source: s, gate: make(chan struct{}), from: 4 << 20, holdAt: 3, hold: make(chan struct{})}
		close(g.gate)
		return g, nil
	}
	h := newHarness(t, harnessOpts{open: open})
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
