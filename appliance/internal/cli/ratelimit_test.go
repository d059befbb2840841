package cli

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRateLimit gives the file sink rate_limit = 5 (bursts of 5) and the daemon 40
// findings in one pass: delivery is held to the limit (not all there a second after
// the first), every alert arrives in the end, none dropped, and what was held back is
// counted (domainm_alerts_held_back_total), alerted (alert-sink-rate-limited) and
// shown in status.
func TestRateLimit(t *testing.T) {
	port := freePort(t)
	s := newSetup(t, "", fmt.Sprintf("rate_limit = 5\nrate_burst = 5\n\n[metrics]\nlisten = \"127.0.0.1:%d\"\n", port))
	var rules strings.Builder
	for i := range 40 {
		fmt.Fprintf(&rules, "rule burst%02d { strings: $a = \"%s\" condition: $a }\n", i, e2eEvil)
	}
	s.rule(t, "burst.yar", rules.String())
	n := listenNotify(t, s.dir)
	startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	count := func() int { return len(s.alertsWith(t, "memory-match", "")) }
	waitUntil(t, "the first finding's alert", 60*time.Second, func() bool { return count() > 0 })
	time.Sleep(time.Second)
	if c := count(); c >= 40 {
		t.Errorf("%d of 41 findings delivered a second after the first: the limit of 5 a second did not hold", c)
	}
	start := time.Now()
	waitUntil(t, "every finding delivered", 60*time.Second, func() bool { return count() == 41 })
	t.Logf("the rest delivered in %v", time.Since(start).Round(100*time.Millisecond))

	body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	held := metricValue(body, `domainm_alerts_held_back_total{sink="local"}`)
	if held < 20 || held > 60 {
		t.Errorf(`domainm_alerts_held_back_total{sink="local"} = %v; want the alerts over the limit, each counted once`, held)
	}
	if v := metricValue(body, `domainm_alerts_dropped_total{reason="spool_full",severity="medium",sink="local"}`); v != 0 {
		t.Errorf("dropped %v", v)
	}
	waitUntil(t, "the rate-limited alert", 30*time.Second, func() bool {
		a := s.alertsWith(t, "alert-sink-rate-limited", "")
		return len(a) == 1 && strings.Contains(a[0].Message, "none dropped")
	})
	out, _, _ := runDomainm(t, "status", "--socket", s.sock)
	if !regexp.MustCompile(`(?m)^sink local: +file, up; .*held back by rate_limit [1-9]\d*;`).MatchString(out) {
		t.Errorf("status does not show what was held back:\n%s", out)
	}
	t.Logf("held back %v", held)
}
