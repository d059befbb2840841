package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

	// git checkout replaces a file (unlink, create): evil's rule now matches nothing.
	os.Remove(filepath.Join(h.rules, "a.yar"))
	h.writeRule("a.yar", strings.ReplaceAll(ruleEvil, evilText, "NOT-IN-MEMORY-AT-ALL"))
	h.waitFor("evil gone", func() bool { return len(h.alerts.with("memory-match-gone", "evil")) == 1 })
	if n := len(h.alerts.with("memory-match-gone", "second")); n != 0 {
		t.Errorf("second reported gone %d times although its rule stayed", n)
	}

	// Deleting every rule is allowed, but alerted; every finding is then gone.
	os.RemoveAll(filepath.Join(h.rules, "sub"))
	os.Remove(filepath.Join(h.rules, "a.yar"))
	os.Remove(filepath.Join(h.rules, "b.yar"))
	h.waitFor("empty rule set alert", func() bool { return len(h.alerts.with("rules-empty-ruleset", "")) == 1 })
	h.waitFor("all gone", func() bool {
		return len(h.alerts.with("memory-match-gone", "second")) == 1 && len(h.alerts.with("memory-match-gone", "third")) == 1
	})
	if _, n := status(); n != 0 {
		t.Errorf("%d rules after deleting all", n)
	}

	// And rules come back.
	h.writeRule("a.yar", ruleEvil)
	h.waitFor("evil found again", func() bool { return len(h.alerts.with("memory-match", "evil")) == 2 })

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
	h.waitFor("evil gone after the swap", func() bool { return len(h.alerts.with("memory-match-gone", "evil")) == 1 })
	// The new release is watched.
	os.WriteFile(filepath.Join(v2, "c.yar"), []byte(ruleThird), 0o644)
	h.waitFor("third found in the new release", func() bool { return len(h.alerts.with("memory-match", "third")) == 1 })
}
