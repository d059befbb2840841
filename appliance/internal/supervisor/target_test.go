package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// faultSource fails every read at or above failFrom (negative: none), as a RAM file
// truncated under its mapping does.
type faultSource struct {
	memscan.Source
	failFrom *atomic.Int64
}

func (f *faultSource) ReadAt(p []byte, gpa int64) (int, error) {
	if from := f.failFrom.Load(); from >= 0 && gpa+int64(len(p)) > from {
		return 0, errors.New("injected read failure")
	}
	return f.Source.ReadAt(p, gpa)
}

// flakyDisk is a disk checker whose first check records a baseline and whose checks
// fail while fail is set.
type flakyDisk struct {
	scriptedDisk
	fail chan bool
}

func (d *flakyDisk) Check(ctx context.Context, r *yara.Rules) (DiskReport, error) {
	n := d.calls.Load()
	rep, err := d.scriptedDisk.Check(ctx, r)
	select {
	case f := <-d.fail:
		if f {
			return DiskReport{}, errors.New("injected disk failure")
		}
	default:
	}
	rep.BaselineCreated = n == 0
	return rep, err
}

// TestEveryEventNamesTarget drives the supervisor through every kind of event it emits
// (findings, rule errors, reloads, an empty rule set, the handshake, a changed guest, a
// quiesce left too long, a replaced, removed and returning RAM file, failing and
// recovering passes and disk checks, a baseline, blind spots, start, stop, a failed
// start) and checks that each names the target: name, uuid and host in domainm.target,
// and host.name/host.id.
func TestEveryEventNamesTarget(t *testing.T) {
	failFrom := &atomic.Int64{}
	failFrom.Store(-1)
	open := func(spec, layout string) (memscan.Source, error) {
		s, err := OpenSource(spec, layout)
		if err != nil {
			return nil, err
		}
		return &faultSource{Source: s, failFrom: failFrom}, nil
	}
	disk := &flakyDisk{scriptedDisk: scriptedDisk{gate: make(chan struct{})}, fail: make(chan bool, 1)}
	close(disk.gate)
	disk.set(change("/etc/passwd", "aaa"))
	h := newHarness(t, harnessOpts{open: open, disk: disk})
	var all []alert.Event
	collect := func() {
		h.alerts.mu.Lock()
		all = append(all, h.alerts.events...)
		h.alerts.events = nil
		h.alerts.mu.Unlock()
	}
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	h.waitFor("baseline", func() bool { return len(h.alerts.with("disk-baseline-created", "")) == 1 })

	// Rules: an error (cleared when the file goes), a reload, an empty set.
	h.writeRule("bad.yar", "rule bad { condition: $x }\n")
	h.waitFor("rule error", func() bool { h.clk.Advance(h.cfg.Rules.Debounce); return len(h.alerts.with("rule-error", "")) > 0 })
	os.Remove(filepath.Join(h.rules, "bad.yar"))
	h.writeRule("b.yar", ruleSec)
	h.waitFor("reload", func() bool { h.clk.Advance(h.cfg.Rules.Debounce); return len(h.alerts.with("rules-reloaded", "")) > 0 })
	os.Remove(filepath.Join(h.rules, "a.yar"))
	os.Remove(filepath.Join(h.rules, "b.yar"))
	h.waitFor("empty", func() bool {
		h.clk.Advance(h.cfg.Rules.Debounce)
		return len(h.alerts.with("rules-empty-ruleset", "")) > 0
	})
	h.writeRule("a.yar", ruleEvil)
	h.waitFor("reload", func() bool { h.clk.Advance(h.cfg.Rules.Debounce); return len(h.alerts.with("rules-reloaded", "")) > 1 })

	// The handshake, a changed guest, a quiesce left too long.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := h.sup.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(h.cfg.Control.QuiesceTimeout)
	h.waitFor("quiesced too long", func() bool { return len(h.alerts.with("supervisor-quiesced-too-long", "")) == 1 })
	ram, _ := os.ReadFile(h.ram)
	for i := 0; i < len(ram); i += 512 {
		ram[i] ^= 0x5a
	}
	changed := filepath.Join(h.dir, "changed")
	os.WriteFile(changed, ram, 0o600)
	if _, err := h.sup.Resume(ctx, control.ResumeArgs{Source: "file:" + changed}); err == nil {
		t.Fatal("resume on a changed guest accepted")
	}
	if _, err := h.sup.Resume(ctx, control.ResumeArgs{Source: "file:" + h.ram}); err != nil {
		t.Fatal(err)
	}
	h.waitFor("resumed", func() bool { return len(h.alerts.with("supervisor-resumed", "")) == 1 })

	// A finding gone, a failing pass and its recovery, blind spots. Each wait runs
	// passes until the alert is there: a pass already under way (a follow-up after a
	// reload) may not have seen the change yet.
	passUntil := func(what, action string) {
		h.waitFor(what, func() bool {
			h.clk.Advance(h.cfg.Memory.Interval)
			return len(h.alerts.with(action, "")) == 1
		})
	}
	h.tick()
	gone := len(h.alerts.with("memory-match-gone", "evil"))
	h.erase(evilAt, len(evilText))
	h.waitFor("evil gone", func() bool {
		h.clk.Advance(h.cfg.Memory.Interval)
		return len(h.alerts.with("memory-match-gone", "evil")) > gone
	})
	failFrom.Store(0)
	passUntil("pass failed", "memory-source-pass-failed")
	failFrom.Store(-1)
	passUntil("recovered", "memory-source-recovered")
	failFrom.Store(6 << 20)
	passUntil("blind spots", "memory-scan-blind-spots")
	failFrom.Store(-1)
	passUntil("blind spots cleared", "memory-scan-complete")

	// A disk check that fails and recovers.
	disk.fail <- true
	h.clk.Advance(h.cfg.Disk.Interval)
	h.waitFor("disk failed", func() bool { return len(h.alerts.with("disk-check-failed", "")) == 1 })
	h.clk.Advance(h.cfg.Disk.Interval)
	h.waitFor("disk recovered", func() bool { return len(h.alerts.with("disk-recovered", "")) == 1 })

	// The RAM file replaced, removed and back.
	tmp := h.ram + ".new"
	os.WriteFile(tmp, make([]byte, ramSize), 0o600)
	os.Rename(tmp, h.ram)
	passUntil("replaced", "memory-source-replaced")
	os.Remove(h.ram)
	passUntil("source gone", "memory-source-gone")
	os.WriteFile(tmp, make([]byte, ramSize), 0o600)
	os.Rename(tmp, h.ram)
	h.waitFor("back", func() bool {
		h.clk.Advance(time.Second)
		return len(h.alerts.with("memory-source-back", "")) == 1
	})
	h.stop()
	collect()

	// A start that fails: the rules folder is gone. (A broken rule file does not stop a
	// start: it is left out and the rest loads; TestStartWithBrokenRuleFile.)
	if err := os.RemoveAll(h.rules); err != nil {
		t.Fatal(err)
	}
	h.alerts = &recorder{}
	h.deps.Alerts = h.alerts
	sup, err := New(h.cfg, h.deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Run(context.Background()); err == nil {
		t.Fatal("started without a rules folder")
	}
	collect()

	kinds := map[string]bool{}
	for _, e := range all {
		kinds[e.Event.Action] = true
		tg := e.DomainM.Target
		if tg == nil || tg.Name != "t1" || tg.UUID != h.cfg.Target.UUID || e.Host == nil || e.Host.Name != "t1" || e.Host.ID != h.cfg.Target.UUID {
			t.Errorf("%s does not name its target: domainm.target %+v, host %+v (%s)", e.Event.Action, tg, e.Host, e.Message)
		}
	}
	want := []string{"supervisor-started", "memory-match", "memory-match-gone", "rule-error", "rules-error-cleared", "rules-reloaded",
		"rules-empty-ruleset", "supervisor-quiesced", "supervisor-quiesced-too-long", "memory-source-guest-changed",
		"supervisor-resumed", "memory-source-pass-failed", "memory-source-recovered", "memory-scan-blind-spots",
		"memory-scan-complete", "disk-baseline-created", "file-changed", "disk-check-failed", "disk-recovered",
		"memory-source-replaced", "memory-source-gone", "memory-source-back", "supervisor-stopping", "supervisor-start-failed"}
	var missing []string
	for _, k := range want {
		if !kinds[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		got := make([]string, 0, len(kinds))
		for k := range kinds {
			got = append(got, k)
		}
		sort.Strings(got)
		t.Errorf("event kinds not seen: %s (seen: %s)", strings.Join(missing, " "), strings.Join(got, " "))
	}
}
