package syncpoint_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/domainmtest"
	"github.com/domainm/domainm/image/testenv"
	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/internal/lab"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

const supervisorConfig = `[target]
name = "target"
uuid = "6f1e0f4e-0b1d-4c55-9a55-3c2a9d1e0001"
memory = "file:%s"
layout = "flat"

[memory]
interval = "1s"
workers = 1

[rules]
dir = "%s"

[state]
dir = "%s"

[control]
socket = "%s"

[[alerts.sink]]
name = "local"
type = "file"
path = "%s"
`

const rulesYAR = `rule planted_before_migration { strings: $a = "DOMAINM-PLANTED-7f3a9c-BEFORE-MIGRATION" condition: $a }
rule planted_at_destination { strings: $a = "DOMAINM-PLANTED-AFTER-RESUME-51c2" condition: $a }
`

// alertsOf returns the (rule, action) pairs in the alert file.
func alertsOf(path string) map[string]bool {
	out := map[string]bool{}
	for _, e := range domainmtest.ReadAlerts[struct {
		Rule  *struct{ Name string }  `json:"rule"`
		Event struct{ Action string } `json:"event"`
	}](path) {
		if e.Rule != nil {
			out[e.Rule.Name+" "+e.Event.Action] = true
		}
	}
	return out
}

// domainm is a running `domainm run` and its files.
type domainm struct {
	*domainmtest.Daemon
	sock, alerts, state string
}

// startDomainm starts the real supervisor watching ram, with its files under dir; the
// test's cleanup kills it (and shows its log when the test failed).
func startDomainm(t *testing.T, dir, ram string) *domainm {
	t.Helper()
	rules := filepath.Join(dir, "rules")
	os.MkdirAll(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "planted.yar"), []byte(rulesYAR), 0o644)
	d := &domainm{sock: filepath.Join(dir, "control.sock"), alerts: filepath.Join(dir, "alerts.jsonl"),
		state: filepath.Join(dir, "state")}
	cfg := filepath.Join(dir, "domainm.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(supervisorConfig, ram, rules, d.state, d.sock, d.alerts)), 0o644)
	d.Daemon = domainmtest.Start(t, cfg, domainmtest.Options{})
	return d
}

// watchSource starts the real supervisor on the source target's RAM file, connects the
// coordinator's client (closed when the test ends) and waits for the planted needle's
// alert.
func watchSource(ctx context.Context, t *testing.T, f *fixture) (*domainm, *control.Client) {
	t.Helper()
	d := startDomainm(t, t.TempDir(), f.pair.Target.RAMFile)
	d.WaitSocket(t, d.sock, 30*time.Second)
	c, err := control.Dial(ctx, d.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	testenv.WaitFor(t, 60*time.Second, "the planted string matched at the source", func() bool {
		return alertsOf(d.alerts)["planted_before_migration memory-match"]
	})
	return d, c
}

// TestCoMigrationWithDomainmRun co-migrates a pair watched by the real supervisor
// process: the string planted at the source before migration is matched there, the
// supervisor is resumed on the destination's RAM file, keeps the finding (no
// memory-match-gone) and matches a string planted at the destination afterwards.
func TestCoMigrationWithDomainmRun(t *testing.T) {
	domainmtest.Binary(t) // before the VMs start
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newPair(ctx, t, "domainm-sp-real-", 128, 64, 100<<20)
	d, c := watchSource(ctx, t, f)
	alerts := d.alerts
	st, err := c.Status(ctx)
	if err != nil || st != control.StateMonitoring {
		t.Fatalf("supervisor status %q, %v", st, err)
	}

	hs := lab.Handshake(c, f.src, f.dst, "target")
	r, err := syncpoint.Run(ctx, f.t, f.m, hs, syncpoint.Config{Mode: syncpoint.Sync})
	logResult(t, r)
	checkInvariant(t, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Call(ctx, "status", nil)
	if err != nil || !strings.Contains(string(resp.Raw), f.dst.RAMFile("target")) || resp.State != control.StateMonitoring {
		t.Fatalf("after resume: %s, %v; want monitoring %s", resp.Raw, err, f.dst.RAMFile("target"))
	}
	plant(t, f.dst.RAMFile("target"), 50<<20, []byte("DOMAINM-PLANTED-AFTER-RESUME-51c2"))
	testenv.WaitFor(t, 60*time.Second, "the string planted at the destination matched", func() bool {
		return alertsOf(alerts)["planted_at_destination memory-match"]
	})
	if got := alertsOf(alerts); got["planted_before_migration memory-match-gone"] {
		t.Errorf("the string planted before migration was reported gone at the destination: %v", got)
	}
	resp, _ = c.Call(ctx, "status", nil)
	t.Logf("supervisor after migration: %s", resp.Raw)
}

// freezer is the handshake with the supervisor frozen (SIGSTOP) right after it answered
// prepare; with wakeDuringRollback it is woken (SIGCONT) while the coordinator's
// rollback waits for it to resume at the source, else the test wakes it later.
type freezer struct {
	*control.Handshake
	pid                int
	wakeDuringRollback bool
	frozen             time.Time
}

func (f *freezer) Prepare(ctx context.Context) error {
	err := f.Handshake.Prepare(ctx)
	if err == nil {
		syscall.Kill(f.pid, syscall.SIGSTOP)
		f.frozen = time.Now()
	}
	return err
}

func (f *freezer) ResumeAtSource(ctx context.Context) error {
	if !f.frozen.IsZero() && f.wakeDuringRollback {
		time.AfterFunc(300*time.Millisecond, func() { syscall.Kill(f.pid, syscall.SIGCONT) })
	}
	return f.Handshake.ResumeAtSource(ctx)
}

// TestStaleResumeAfterFreeze (issue 8, item 8): the supervisor freezes after prepare and
// the coordinator's resume at the destination times out. Woken during the rollback, the
// supervisor must refuse the abandoned resume for the destination (still unread in the
// old connection) and carry out the resume at the source: it watches the source's RAM
// file (status and state log), the target runs at the source, and no alert or state
// names the destination. Woken only after the coordinator gave up (the target left
// paused, exit 2: the case reported), it must refuse both abandoned resumes and stay
// quiesced, not watch the destination.
func TestStaleResumeAfterFreeze(t *testing.T) {
	domainmtest.Binary(t) // before the VMs start
	for _, tc := range []struct {
		name string
		wake bool
	}{{"woken-during-rollback", true}, {"woken-after-exit-2", false}} {
		t.Run(tc.name, func(t *testing.T) { staleResumeAfterFreeze(t, tc.wake) })
	}
}

func staleResumeAfterFreeze(t *testing.T, wakeDuringRollback bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newPair(ctx, t, "domainm-sp-stale-", 64, 64, 40<<20)
	d, c := watchSource(ctx, t, f)

	fz := &freezer{Handshake: lab.Handshake(c, f.src, f.dst, "target"), pid: d.Pid(), wakeDuringRollback: wakeDuringRollback}
	r, err := syncpoint.Run(ctx, f.t, f.m, fz, syncpoint.Config{Mode: syncpoint.Sync, Handshake: 2 * time.Second})
	logResult(t, r)
	checkInvariant(t, r)
	t.Logf("co-migration: %v", err)
	if fz.frozen.IsZero() {
		t.Fatal("the supervisor was never frozen: prepare failed")
	}
	var se *syncpoint.Error
	if !errors.As(err, &se) || se.Phase != "P4" {
		t.Fatalf("got %v, want a failure at P4", err)
	}
	wantState, wantRefused := control.StateMonitoring, 1 // the abandoned resume for the destination
	if wakeDuringRollback {
		if !r.RolledBack {
			t.Errorf("outcome %q, want rolled back to the source", se.Outcome)
		}
	} else {
		if r.RolledBack || !strings.Contains(se.Outcome, "target paused") {
			t.Errorf("outcome %q, want the target left paused", se.Outcome)
		}
		syscall.Kill(d.Pid(), syscall.SIGCONT)
		// The rollback's reconnect timed out on status, so only the resume for the
		// destination is pending when the supervisor wakes.
		wantState = "quiesced"
	}
	// Time for anything still pending in the supervisor to be carried out, wrongly.
	time.Sleep(3 * time.Second)

	srcRAM, dstRAM := f.src.RAMFile("target"), f.dst.RAMFile("target")
	if running(t, f.t.Src) != wakeDuringRollback || running(t, f.t.Dst) {
		t.Errorf("the target must run at the source only, and only if rolled back")
	}
	if !running(t, f.m.Src) || running(t, f.m.Dst) {
		t.Errorf("domain M must run at the source only")
	}
	c2, err := control.Dial(ctx, d.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	resp, err := c2.Call(ctx, "status", nil)
	if err != nil || resp.State != wantState || !strings.Contains(string(resp.Raw), `"source":"file:`+srcRAM+`"`) {
		t.Errorf("supervisor status %s, %v; want %s file:%s", resp.Raw, err, wantState, srcRAM)
	}
	recs, err := proto.ReadStateLog(filepath.Join(d.state, proto.StateLogFile))
	if err != nil || len(recs) == 0 {
		t.Fatalf("state log: %d records, %v", len(recs), err)
	}
	for _, rec := range recs {
		if strings.Contains(rec.Source, dstRAM) || rec.Host == f.dst.Name {
			t.Errorf("state log names the destination: %+v", rec)
		}
	}
	if last := recs[len(recs)-1]; last.State != wantState || last.Source != "file:"+srcRAM {
		t.Errorf("last state record %+v, want %s file:%s", last, wantState, srcRAM)
	}
	if b, _ := os.ReadFile(d.alerts); strings.Contains(string(b), dstRAM) || strings.Contains(string(b), "resumed on "+f.dst.Name) {
		t.Errorf("an alert names the destination:\n%s", b)
	}
	refused := 0
	for _, line := range strings.Split(d.Output(), "\n") {
		if strings.Contains(line, "refused as stale") {
			t.Logf("supervisor: %s", line)
			refused++
		}
	}
	if refused != wantRefused {
		t.Errorf("the supervisor's log shows %d requests refused as stale, want %d", refused, wantRefused)
	}
}
