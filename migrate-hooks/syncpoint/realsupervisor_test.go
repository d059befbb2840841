package syncpoint_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/lab"
	"github.com/domainm/domainm/migrate-hooks/syncpoint"
)

// buildDomainm builds the real supervisor (`domainm run`, appliance/cmd/domainm).
func buildDomainm(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "domainm")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/domainm/domainm/appliance/cmd/domainm").CombinedOutput()
	if err != nil {
		t.Fatalf("building domainm: %v\n%s", err, out)
	}
	return bin
}

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
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct {
			Rule  *struct{ Name string }  `json:"rule"`
			Event struct{ Action string } `json:"event"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Rule != nil {
			out[e.Rule.Name+" "+e.Event.Action] = true
		}
	}
	return out
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCoMigrationWithDomainmRun co-migrates a pair watched by the real supervisor
// process: the string planted at the source before migration is matched there, the
// supervisor is resumed on the destination's RAM file, keeps the finding (no
// memory-match-gone) and matches a string planted at the destination afterwards.
func TestCoMigrationWithDomainmRun(t *testing.T) {
	bin := buildDomainm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := &fixture{}
	prefix := "domainm-sp-real-"
	dir := t.TempDir()
	f.src = newHostT(t, "src", prefix)
	f.dst = newHostT(t, "dst", prefix)
	var err error
	f.pair, err = lab.StartSource(ctx, f.src, lab.NewSpec(128, 64, accel(t)))
	if err != nil {
		t.Fatal(err)
	}
	plant(t, f.pair.Target.RAMFile, 100<<20, needle)
	f.t, f.m, err = f.pair.Destination(ctx, f.dst)
	if err != nil {
		t.Fatal(err)
	}

	rules := filepath.Join(dir, "rules")
	os.MkdirAll(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "planted.yar"), []byte(rulesYAR), 0o644)
	sock := filepath.Join(dir, "control.sock")
	alerts := filepath.Join(dir, "alerts.jsonl")
	cfg := filepath.Join(dir, "domainm.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(supervisorConfig, f.pair.Target.RAMFile, rules, filepath.Join(dir, "state"), sock, alerts)), 0o644)
	cmd := exec.Command(bin, "run", "--config", cfg)
	logf, _ := os.Create(filepath.Join(dir, "domainm.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("domainm run log:\n%s", b)
		}
	})

	var c *control.Client
	waitUntil(t, 30*time.Second, "the control socket", func() bool {
		c, err = control.Dial(ctx, sock)
		return err == nil
	})
	defer c.Close()
	waitUntil(t, 60*time.Second, "the planted string matched at the source", func() bool {
		return alertsOf(alerts)["planted_before_migration memory-match"]
	})
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
	waitUntil(t, 60*time.Second, "the string planted at the destination matched", func() bool {
		return alertsOf(alerts)["planted_at_destination memory-match"]
	})
	if got := alertsOf(alerts); got["planted_before_migration memory-match-gone"] {
		t.Errorf("the string planted before migration was reported gone at the destination: %v", got)
	}
	resp, _ = c.Call(ctx, "status", nil)
	t.Logf("supervisor after migration: %s", resp.Raw)
}
