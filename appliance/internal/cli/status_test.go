package cli

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
)

// TestStatusSummary runs domainm status as an operator does, against a running daemon
// with a disk image, a rule file that does not compile, a rules reload, the file
// sink and a sink whose receiver is down: the summary names every part, zero values
// and "never" included, and exits 1 (not healthy: rules-broken); --json has the same
// detail with its zero fields present.
func TestStatusSummary(t *testing.T) {
	img := ext4test.Image(t, map[string]string{"etc/passwd": "root:x:0:0::/root:/bin/sh\n", "usr/bin/tool": "\x7fELF tool"}, 8)
	down := freePort(t)
	s := newSetup(t, fmt.Sprintf("disk = %q\n", img), fmt.Sprintf(`
[disk]
interval = "1s"

[[alerts.sink]]
name = "down"
type = "syslog"
transport = "tcp"
address = "127.0.0.1:%d"
backoff_min = "100ms"
backoff_max = "200ms"
`, down))
	s.rule(t, "b.yar", "rule ok_b { condition: false }\n\nrule broken { condition: $nope }")
	n := listenNotify(t, s.dir)
	startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "a pass and a disk check", 60*time.Second, func() bool {
		d := statusJSON(t, s).Detail
		return d != nil && d.Memory.Passes >= 1 && d.Disk.Checks >= 1
	})
	out, errOut, code := runDomainm(t, "status", "--socket", s.sock)
	t.Logf("domainm status (exit %d):\n%s%s", code, out, errOut)
	if code != ExitFindings {
		t.Errorf("exit %d, want %d (not healthy: a rule file does not compile)", code, ExitFindings)
	}
	q := regexp.QuoteMeta
	ts := `20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\)`
	want := []string{
		`state: +monitoring, NOT healthy`,
		`problem: +rules-broken: .*b\.yar:3`,
		`target: +e2e-target \(uuid 123e4567-e89b-12d3-a456-426614174000, host -\)`,
		`memory: +` + q("file:"+s.ram) + `, layout flat, a pass every 1s`,
		`last pass: +` + ts + `, took [0-9.]+m?s, complete: yes`,
		`blocks: +16: \d+ scanned, \d+ unchanged, \d+ zero, 0 unscanned \(0 B\)`,
		`passes: +\d+ complete since the start; 1 findings open`,
		`guest: +unknown, tried on ` + q("file:"+s.ram) + ` ` + ts + ` \(.+\): matches carry guest-physical addresses only, no virtual scan`,
		`rules: +1 rules in 1 files from ` + q(s.rules) + ` \(set [0-9a-f]+, loaded ` + ts + `\)`,
		`last reload: +never since the start; 0 reloads, 0 failed`,
		`broken file: +b\.yar:3: `,
		`disk: +` + q(img) + `, a check every 1s`,
		`last check: +` + ts + `; \d+ checks since the start, failing: no`,
		`baseline: +` + q(s.state+"/baseline.db") + `, [0-9.]+m?s old`,
		`sink local: +file, up; spooled 0 \(0 B\), oldest 0s; held back by rate_limit 0; last delivered ` + ts + `; last error: -`,
		`sink down: +syslog, DOWN \(or nothing sent yet\); spooled [1-9]\d* \([0-9.]+ KiB\), oldest [1-9][0-9.]*m?s; held back by rate_limit 0; last delivered never; last error: .*connection refused`,
		`config: +` + q(s.cfg) + `; last reload never since the start`,
		`needs restart: +none`,
		`version: +\S+, up [0-9.]+m?s \(since 20`,
	}
	for _, re := range want {
		if !regexp.MustCompile(`(?m)^ *` + re).MatchString(out) {
			t.Errorf("status does not match %s", re)
		}
	}

	// A rules reload: its time and result (the broken file is still left out).
	s.rule(t, "c.yar", `rule second { strings: $a = "`+e2eSecond+`" condition: $a }`)
	waitUntil(t, "the reload in status", 30*time.Second, func() bool {
		out, _, _ = runDomainm(t, "status", "--socket", s.sock)
		return regexp.MustCompile(`(?m)^  last reload: +` + ts + `, partial; 1 reloads, 0 failed`).MatchString(out)
	})
	if !strings.Contains(out, "rules:  ") || !regexp.MustCompile(`(?m)^rules: +2 rules in 2 files`).MatchString(out) {
		t.Errorf("after the reload:\n%s", out)
	}

	js, _, code := runDomainm(t, "status", "--json", "--socket", s.sock)
	if code != ExitFindings {
		t.Errorf("status --json: exit %d", code)
	}
	for _, k := range []string{`"blocks_unscanned": 0`, `"failed_reloads": 0`, `"needs_restart": []`, `"reload_error": ""`,
		`"last_reload": ""`, `"failing": false`, `"oldest_age_seconds": 0`, `"state": "monitoring"`} {
		if !strings.Contains(js, k) {
			t.Errorf("status --json lacks %s", k)
		}
	}
}
