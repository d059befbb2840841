package cli

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
)

// TestRuleControl switches rules off and allows findings from the configuration, as
// an operator does, without touching a rule file: a rule disabled by tag matches
// nothing in memory, an exception for integrity-* on a path keeps that file's change
// quiet while another file's change is alerted, status lists both with the findings
// left out; a reload (SIGHUP) enables the tagged rule again (its finding is alerted)
// and allows another rule on this target (its open finding ends as gone).
func TestRuleControl(t *testing.T) {
	img := ext4test.Image(t, map[string]string{"etc/motd": "welcome\n", "usr/bin/tool": "\x7fELF tool"}, 8)
	s := newSetup(t, fmt.Sprintf("disk = %q\n", img), `
[disk]
interval = "1s"

[[rules.exception]]
rule = "integrity-*"
path = "/etc/mot?"
reason = "banner edits"
`)
	s.editConfig(t, `debounce = "200ms"`, "debounce = \"200ms\"\ndisable = [\"tag:noisy\"]")
	s.rule(t, "b.yar", `rule second : noisy { strings: $a = "`+e2eSecond+`" condition: $a }`)
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "the baseline and the finding of evil", 60*time.Second, func() bool {
		return len(s.alertsWith(t, "disk-baseline-created", "")) == 1 && len(s.alertsWith(t, "memory-match", "evil")) == 1
	})
	ext4test.Overwrite(t, img, "/etc/motd", []byte("WELCOME\n"))
	ext4test.Overwrite(t, img, "/usr/bin/tool", []byte("\x7fELF TOOL"))
	waitUntil(t, "the change of /usr/bin/tool", 60*time.Second, func() bool { return len(s.alertsWith(t, "file-changed", "")) >= 1 })
	var out string
	waitUntil(t, "suppressed counts in status", 30*time.Second, func() bool {
		out, _, _ = runDomainm(t, "status", "--socket", s.sock)
		return strings.Contains(out, "suppressed:     1 findings in the last memory pass, 1 in the last disk check")
	})
	for _, a := range s.alertsWith(t, "file-changed", "") {
		if a.File == nil || a.File.Path != "/usr/bin/tool" {
			t.Errorf("file-changed alert for %+v: only /usr/bin/tool is not allowed", a.File)
		}
	}
	if a := s.alertsWith(t, "memory-match", "second"); len(a) != 0 {
		t.Errorf("rule second (tag noisy, disabled) alerted: %+v", a)
	}
	for _, want := range []string{"disabled:       tag:noisy", "exceptions:     integrity-* on path /etc/mot? (banner edits)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	// Reload: the tag is enabled again, rule evil allowed on this target.
	s.editConfig(t, `disable = ["tag:noisy"]`, "disable = []")
	s.editConfig(t, `[[rules.exception]]`, "[[rules.exception]]\nrule = \"evil\"\ntarget = \"e2e-target\"\n\n[[rules.exception]]")
	p.Signal(syscall.SIGHUP)
	waitUntil(t, "second alerted and evil gone after the reload", 30*time.Second, func() bool {
		return len(s.alertsWith(t, "memory-match", "second")) == 1 && len(s.alertsWith(t, "memory-match-gone", "evil")) == 1
	})
	if a := s.alertsWith(t, "config-reloaded", ""); len(a) != 1 || !strings.Contains(a[0].Message, "applied: rules.disable") ||
		!strings.Contains(a[0].Message, "rules.exception") || strings.Contains(a[0].Message, "until a restart") {
		t.Errorf("config-reloaded: %+v; want rules.disable and rules.exception applied live", a)
	}
	checkEventsSchema(t, s.alerts)
}
