package supervisor

import (
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// slowRule runs 4 Mi iterations of YARA's condition VM per window and never matches:
// 0.3-0.5 s per 1 MiB window here, against milliseconds for a string rule. (1 Mi cost
// 75-135 ms once scans ran without libyara's try/catch, 25d6cb4: a pass then took no
// more than 3 intervals on a quiet machine, and CI rehearsals failed.) It does not use
// filesize, which memory windows may leave undefined.
const slowRule = "rule slow_loop { condition: for any i in (0..4194303) : (uint8(i) == 0x100) }\n"

// TestSlowRulePassOverdue: with fast passes nothing is overdue; a rule that makes a pass
// take several intervals is alerted while the pass runs (memory-pass-overdue, once),
// again with its duration when it ends, and counted in the metrics.
func TestSlowRulePassOverdue(t *testing.T) {
	// Overdue after 600 ms: passes over unchanged memory take milliseconds; one with the
	// slow rule (6 non-zero windows, 2 workers) about 1 s on an idle machine, more under
	// load. (Under the race detector the fast passes come near the limit too.)
	const interval = 200 * time.Millisecond
	h := newHarness(t, harnessOpts{realClock: true, interval: interval})
	noise := make([]byte, 2<<20) // two blocks of non-zero memory for the slow rule to crawl
	rand.Read(noise)
	h.poke(0, string(noise))
	h.waitFor("fast passes", func() bool { return h.passes() >= 4 })
	if n := len(h.alerts.with("memory-pass-overdue", "")); n != 0 {
		t.Fatalf("%d overdue alerts for fast passes:\n%s", n, h.alerts.dump())
	}

	h.writeRule("slow.yar", slowRule)
	long := func(what string, cond func() bool) { // the harness's 20 s is short for a loaded machine
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; alerts:\n%s", what, h.alerts.dump())
			}
		}
	}
	long("overdue alert", func() bool { return len(h.alerts.with("memory-pass-overdue", "")) >= 1 })
	e := h.alerts.with("memory-pass-overdue", "")[0]
	if !strings.Contains(e.Message, "more than 3 memory intervals (200ms)") || e.Severity() > 4 {
		t.Errorf("overdue alert %q (severity %v)", e.Message, e.Severity())
	}
	long("overdue pass ended", func() bool { return len(h.alerts.with("memory-pass-overdue-ended", "")) >= 1 })
	p := h.passes()
	long("passes fast again", func() bool { return h.passes() >= p+3 })
	// Usually one slow pass; two when the reload landed mid-pass (the follow-up pass
	// scans the blocks scanned before the swap with the slow rule too).
	over, ended := len(h.alerts.with("memory-pass-overdue", "")), len(h.alerts.with("memory-pass-overdue-ended", ""))
	if over < 1 || over > 2 || ended != over {
		t.Errorf("%d overdue alerts and %d ended, want one or two of each (the slow passes only):\n%s", over, ended, h.alerts.dump())
	}
	if n := testutil.ToFloat64(h.sup.m.passesOverdue); int(n) != over {
		t.Errorf("domainm_memory_passes_overdue_total = %v, want %d", n, over)
	}
	var m dto.Metric
	if err := h.sup.m.passDuration.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	hist := m.GetHistogram()
	var slow uint64 // passes slower than 3 intervals, from the buckets
	for _, b := range hist.GetBucket() {
		if b.GetUpperBound() == 0.5 {
			slow = hist.GetSampleCount() - b.GetCumulativeCount()
		}
	}
	if hist.GetSampleCount() < 8 || slow < uint64(over) {
		t.Errorf("pass duration histogram: %d passes, %d over 0.5 s; want >= 8 and >= %d", hist.GetSampleCount(), slow, over)
	}
	if last := testutil.ToFloat64(h.sup.m.passSeconds); last > 0.5 {
		t.Errorf("domainm_memory_pass_seconds = %v after fast passes", last)
	}
	t.Logf("overdue: %s; ended: %s", e.Message, h.alerts.with("memory-pass-overdue-ended", "")[0].Message)
}

// TestYaraTimeoutConfig: memory.yara_timeout bounds each block's scan in the daemon: a
// rule slower than it leaves its blocks unscanned (counted as block errors) instead of
// stalling the pass. libyara counts the limit in whole seconds.
func TestYaraTimeoutConfig(t *testing.T) {
	// 64 Mi iterations per window, about 7 s at the 0.1 s per Mi seen after 25d6cb4 (8 Mi
	// came within 0.1 s of the 1 s limit); libyara stops each window after 1 s anyway.
	const slower = "rule slower { condition: for any i in (0..67108863) : (uint8(i) == 0x100) }\n"
	h := newHarness(t, harnessOpts{})
	h.writeRule("slow.yar", slower)
	h.stop()
	h.cfg.Memory.YaraTimeout = time.Second
	h.restart()
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	if n := testutil.ToFloat64(h.sup.m.blocks.WithLabelValues("error")); n < 1 {
		t.Errorf("a rule slower than memory.yara_timeout 1s: %v blocks unscanned, want >= 1", n)
	}
}

// TestSlowRuleWarnedAtReload: libyara's warnings about a newly loaded rule ("may slow
// down scanning", as domainm rules check prints them) are alerted with file and line, at
// start and at reload, once per warning while it stays.
func TestSlowRuleWarnedAtReload(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.writeRule("slowstr.yar", "rule ok { condition: false }\nrule slowstr { strings: $a = { 01 ?? } condition: $a }\n")
	h.reloadDone("warning alerted", func() bool { return len(h.alerts.with("rule-warning", "")) == 1 })
	w := h.alerts.with("rule-warning", "")[0]
	if want := filepath.Join(h.rules, "slowstr.yar"); w.DomainM.RuleFile != want || w.DomainM.RuleLine != 2 ||
		!strings.Contains(w.Message, "may slow down scanning") {
		t.Errorf("warning at %s:%d %q, want %s:2 naming the slow string", w.DomainM.RuleFile, w.DomainM.RuleLine, w.Message, want)
	}
	h.writeRule("b.yar", ruleSec)
	h.reloadDone("second reload", func() bool { return h.ruleCount() == 4 })
	if n := len(h.alerts.with("rule-warning", "")); n != 1 {
		t.Errorf("%d warnings after an unrelated reload, want the first only", n)
	}
	h.restart()
	if n := len(h.alerts.with("rule-warning", "")); n != 1 {
		t.Errorf("start with a slow rule: %d warnings, want 1", n)
	}
}

// TestSlowRuleEstimatedAtReload: each rule file loaded is timed over a probe window
// (domainm_rule_file_window_seconds); a reload whose next pass would outlast
// memory.interval is alerted as rules-slow, naming the expensive file, before any pass
// is overdue. A fast reload is not.
func TestSlowRuleEstimatedAtReload(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.stop()
	h.cfg.Memory.Interval = 300 * time.Millisecond // on the fake clock: only the estimate reads it
	h.restart()
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	h.writeRule("b.yar", ruleSec)
	h.reloadDone("fast reload profiled", func() bool {
		return h.ruleCount() == 2 && testutil.CollectAndCount(h.sup.m.ruleFileSeconds) == 2
	})
	if n := len(h.alerts.with("rules-slow", "")); n != 0 {
		t.Errorf("a fast reload alerted rules-slow:\n%s", h.alerts.dump())
	}
	// slowRule: the estimate (6 windows, 2 workers) is 3-5 times the interval, while the
	// fast set's is a tenth of it.
	h.writeRule("slow.yar", slowRule)
	h.reloadDone("rules-slow", func() bool { return len(h.alerts.with("rules-slow", "")) == 1 })
	e := h.alerts.with("rules-slow", "")[0]
	if !strings.Contains(e.Message, "most expensive: slow.yar (") || !strings.Contains(e.Message, "memory.interval 300ms") {
		t.Errorf("rules-slow alert %q should name slow.yar and the interval", e.Message)
	}
	slow := testutil.ToFloat64(h.sup.m.ruleFileSeconds.WithLabelValues("slow.yar"))
	fast := testutil.ToFloat64(h.sup.m.ruleFileSeconds.WithLabelValues("a.yar"))
	if slow < 0.1 || fast > slow/10 {
		t.Errorf("domainm_rule_file_window_seconds: slow.yar %v s, a.yar %v s", slow, fast)
	}
	t.Logf("%s", e.Message)
}
