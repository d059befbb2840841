package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/domainmtest"
	"github.com/domainm/domainm/diskscan/ext4test"
	"github.com/domainm/domainm/image/testenv"
	"github.com/domainm/domainm/memscan/vmtest"
)

// These tests run `domainm run` as a real process, built from appliance/cmd/domainm
// (the binary the unit starts), with NOTIFY_SOCKET pointing at a socket the test reads
// in place of systemd.

// stopBound is how long domainm may take to stop after SIGTERM.
const stopBound = 15 * time.Second

// domainmBinary is the daemon, built once per test process.
var domainmBinary = domainmtest.Binary

// notifyListener stands in for systemd's notification socket.
type notifyListener struct {
	path string
	*testenv.Datagrams
}

func listenNotify(t *testing.T, dir string) *notifyListener {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	return &notifyListener{path: path, Datagrams: testenv.ListenDatagrams(t, "unixgram", path)}
}

// all is every message received so far, one a line of a datagram.
func (n *notifyListener) all() []string {
	var out []string
	for _, d := range n.All() {
		for _, line := range strings.Split(d, "\n") {
			if line != "" {
				out = append(out, line)
			}
		}
	}
	return out
}

func (n *notifyListener) count(prefix string) int {
	c := 0
	for _, m := range n.all() {
		if strings.HasPrefix(m, prefix) {
			c++
		}
	}
	return c
}

// index is the position of the first message with prefix, or -1.
func (n *notifyListener) index(prefix string) int {
	for i, m := range n.all() {
		if strings.HasPrefix(m, prefix) {
			return i
		}
	}
	return -1
}

// daemonProc is a running `domainm run` (domainmtest.Daemon) under the names these
// tests use.
type daemonProc struct {
	*domainmtest.Daemon
	stderr daemonOutput // what domainm wrote so far, stderr and stdout
}

type daemonOutput struct{ d *domainmtest.Daemon }

func (o daemonOutput) String() string { return o.d.Output() }

// syncBuffer collects a child process's output while the test reads it.
type syncBuffer = testenv.Buffer

// startDaemon starts domainm run with cfg at log level debug, NOTIFY_SOCKET notify and,
// when watchdog is set, WATCHDOG_USEC (WATCHDOG_PID is its pid, as systemd sets it).
func startDaemon(t *testing.T, cfg, notify string, watchdog time.Duration) *daemonProc {
	t.Helper()
	d := domainmtest.Start(t, cfg, domainmtest.Options{Notify: notify, Watchdog: watchdog, Args: []string{"--log-level", "debug"}})
	return &daemonProc{Daemon: d, stderr: daemonOutput{d}}
}

// stop sends SIGTERM and returns how long the process took to exit, and its exit code.
func (p *daemonProc) stop(t *testing.T) (time.Duration, int) {
	t.Helper()
	return p.Stop(t, stopBound)
}

// waitUntil is testenv.WaitFor with the argument order of these tests.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, timeout, what, cond)
}

// testSetup is a target (a flat RAM file), a rules folder and a config using them.
type testSetup struct {
	dir, ram, rules, cfg, alerts, state, sock string
}

const (
	e2eRAM      = 16 << 20
	e2eEvilAt   = 5<<20 + 0x123
	e2eEvil     = "EVIL-IMPLANT-1234"
	e2eSecondAt = 9<<20 + 0x10
	e2eSecond   = "SECOND-MARKER-5678"
)

// newSetup writes the target, rules and config; targetExtra goes into [target], extra
// at the end of the file.
func newSetup(t *testing.T, targetExtra, extra string) *testSetup {
	t.Helper()
	dir := t.TempDir()
	s := &testSetup{dir: dir, ram: filepath.Join(dir, "ram"), rules: filepath.Join(dir, "rules"),
		cfg: filepath.Join(dir, "domainm.toml"), alerts: filepath.Join(dir, "state", "alerts.jsonl"),
		state: filepath.Join(dir, "state"), sock: filepath.Join(dir, "run", "control.sock")}
	f, err := os.Create(s.ram)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(e2eRAM)
	f.Close()
	s.poke(t, e2eEvilAt, e2eEvil)
	s.poke(t, e2eSecondAt, e2eSecond)
	s.rule(t, "a.yar", `rule evil { strings: $a = "`+e2eEvil+`" condition: $a }`)
	cfg := fmt.Sprintf(`
[target]
name = "e2e-target"
uuid = "123e4567-e89b-12d3-a456-426614174000"
memory = "file:%s"
%s
[memory]
interval = "1s"
block_size = "1MiB"
workers = 1

[rules]
dir = "%s"
debounce = "200ms"

[state]
dir = "%s"

[control]
socket = "%s"

[[alerts.sink]]
name = "local"
type = "file"
path = "%s"
%s`, s.ram, targetExtra, s.rules, s.state, s.sock, s.alerts, extra)
	if err := os.WriteFile(s.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// dial connects to the daemon's control socket for 30 s at most; the connection is
// closed when the test ends.
func (s *testSetup) dial(t *testing.T) (context.Context, *control.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, err := control.Dial(ctx, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ctx, c
}

// startMetricsDaemon starts domainm on a new setup with its metrics on a free loopback
// port and waits for READY=1; it returns the setup, the daemon and the metrics URL.
func startMetricsDaemon(t *testing.T) (*testSetup, *daemonProc, string) {
	t.Helper()
	port := freePort(t)
	s := newSetup(t, "", fmt.Sprintf("\n[metrics]\nlisten = \"127.0.0.1:%d\"\n", port))
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	return s, p, fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
}

// startDiskDaemon starts domainm on an ext4 image of the test tree (makeDiskTree), with
// a disk check every second, and waits for READY=1; it returns the setup, the daemon
// and the image.
func startDiskDaemon(t *testing.T) (*testSetup, *daemonProc, string) {
	t.Helper()
	tree := makeDiskTree(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	ext4test.Mkfs(t, img, tree.dir, 16, "-b", "4096")
	s := newSetup(t, fmt.Sprintf("disk = %q\n", img), "\n[disk]\ninterval = \"1s\"\n")
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	return s, p, img
}

func (s *testSetup) poke(t *testing.T, off int64, text string) {
	t.Helper()
	testenv.WriteAt(t, s.ram, off, []byte(text))
}

func (s *testSetup) rule(t *testing.T, name, text string) {
	t.Helper()
	os.MkdirAll(s.rules, 0o755)
	if err := os.WriteFile(filepath.Join(s.rules, name), []byte(text+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fileAlert is the part of an alert (ECS JSON) the tests look at.
type fileAlert struct {
	Message string `json:"message"`
	File    *struct {
		Path string `json:"path"`
	} `json:"file"`
	Event struct {
		Action string `json:"action"`
	} `json:"event"`
	Rule *struct {
		Name string `json:"name"`
	} `json:"rule"`
	DomainM struct {
		State     string `json:"state"`
		FindingID string `json:"finding_id"`
		RuleFile  string `json:"rule_file"`
		RuleLine  int    `json:"rule_line"`
	} `json:"domainm"`
}

// readAlerts parses the file sink's output.
func (s *testSetup) readAlerts(t *testing.T) []fileAlert {
	return domainmtest.ReadAlerts[fileAlert](s.alerts)
}

func (s *testSetup) alertsWith(t *testing.T, action, rule string) []fileAlert {
	var out []fileAlert
	for _, a := range s.readAlerts(t) {
		if a.Event.Action == action && (rule == "" || a.Rule != nil && a.Rule.Name == rule) {
			out = append(out, a)
		}
	}
	return out
}

// TestRunReadiness checks the systemd protocol: READY=1 only after the alert sinks,
// the rules and the memory source, STATUS lines, watchdog pings, STOPPING=1 and a
// clean exit on SIGTERM.
func TestRunReadiness(t *testing.T) {
	port := freePort(t)
	s := newSetup(t, "", fmt.Sprintf("\n[metrics]\nlisten = \"127.0.0.1:%d\"\n", port))
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 500*time.Millisecond)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	ready := n.index("READY=1")
	for _, before := range []string{"STATUS=starting alert sinks", "STATUS=compiling rules", "STATUS=opening memory source"} {
		if i := n.index(before); i < 0 || i > ready {
			t.Errorf("%q at %d, READY=1 at %d: want it before; messages %q", before, i, ready, n.all())
		}
	}
	waitUntil(t, "watchdog pings", 10*time.Second, func() bool { return n.count("WATCHDOG=1") >= 3 })

	// domainm status asks over the control socket.
	out, err := exec.Command(domainmBinary(t), "status", "--json", "--config", s.cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"state": "monitoring"`) || !strings.Contains(string(out), `"rule_count": 1`) {
		t.Errorf("domainm status: %v\n%s", err, out)
	}

	// The metrics listener: scan series and health.
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	var body string
	waitUntil(t, "a complete pass in /metrics", 20*time.Second, func() bool {
		body = httpGet(t, base+"/metrics")
		return strings.Contains(body, `domainm_memory_passes_total{result="complete"}`)
	})
	for _, want := range []string{"domainm_monitoring 1", "domainm_findings 1", `domainm_memory_blocks_total{outcome="zero"}`,
		`domainm_rule_reloads_total`, `domainm_alert_spool_events{sink="local"}`, "domainm_memory_last_pass_timestamp_seconds 1.",
		"domainm_memory_pass_seconds "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if h := httpGet(t, base+"/healthz"); strings.TrimSpace(h) != "ok" {
		t.Errorf("/healthz = %q", h)
	}

	took, code := p.stop(t)
	t.Logf("stopped %v after SIGTERM", took)
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if n.index("STOPPING=1") < 0 {
		t.Errorf("no STOPPING=1; messages %q", n.all())
	}
	cmd := exec.Command(domainmBinary(t), "status", "--socket", s.sock)
	if out, _ := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != ExitError {
		t.Errorf("domainm status with the daemon stopped: exit %d\n%s", cmd.ProcessState.ExitCode(), out)
	}
}

// TestRunStartsWithBadRules: a rule file that does not compile does not stop the start
// (the IDS keeps detecting with the rest of the folder): READY=1 is sent, the good rules
// detect, the broken file is alerted once naming file and line, and the health says
// rules-broken until it is fixed.
func TestRunStartsWithBadRules(t *testing.T) {
	s := newSetup(t, "", "")
	s.rule(t, "bad.yar", "rule ok { condition: true }\n\nrule bad { strings: $a = \"x\" condition: $nope }")
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "the good rule still detects", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-match", "evil")) == 1 })
	waitUntil(t, "rule-error alert", 10*time.Second, func() bool {
		a := s.alertsWith(t, "rule-error", "")
		return len(a) == 1 && strings.Contains(a[0].Message, "bad.yar:3")
	})
	if k := len(s.alertsWith(t, "supervisor-start-failed", "")); k != 0 {
		t.Errorf("%d supervisor-start-failed alerts for a broken rule file", k)
	}
	waitUntil(t, "rules-broken in the health", 10*time.Second, func() bool {
		recs, err := control.ReadStateLog(filepath.Join(s.state, control.StateLogFile))
		return err == nil && len(recs) > 0 && slices.Contains(recs[len(recs)-1].Problems, control.ProblemRulesBroken)
	})
	// Fixed: the problem clears.
	s.rule(t, "bad.yar", "rule ok { condition: false }")
	waitUntil(t, "rules-broken cleared", 30*time.Second, func() bool {
		recs, err := control.ReadStateLog(filepath.Join(s.state, control.StateLogFile))
		return err == nil && len(recs) > 0 && !slices.Contains(recs[len(recs)-1].Problems, control.ProblemRulesBroken)
	})
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// TestRunCheckConfig: --check-config exits 0 on a good file and 2 with file:line:key on
// a bad one, starting nothing.
func TestRunCheckConfig(t *testing.T) {
	s := newSetup(t, "", "")
	bin := domainmBinary(t)
	out, err := exec.Command(bin, "run", "--config", s.cfg, "--check-config").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration is valid") {
		t.Errorf("good config: %v\n%s", err, out)
	}
	if _, err := os.Stat(s.state); err == nil {
		t.Error("--check-config created the state folder")
	}
	bad := filepath.Join(s.dir, "bad.toml")
	b, _ := os.ReadFile(s.cfg)
	os.WriteFile(bad, bytes.Replace(b, []byte(`workers = 1`), []byte("workers = 1\ninterval_typo = \"5m\""), 1), 0o644)
	cmd := exec.Command(bin, "run", "--config", bad, "--check-config")
	out, _ = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != ExitError || !strings.Contains(string(out), bad+":11: memory.interval_typo: unknown key") {
		t.Errorf("bad config: exit %d\n%s", cmd.ProcessState.ExitCode(), out)
	}
	// The shipped example is valid as it stands, with the shipped rules in its rules
	// folder; its memory source is not there on a build machine (a warning).
	shipped, err := os.ReadFile("../../../image/domainm.toml")
	if err != nil {
		t.Fatal(err)
	}
	rulesDir, _ := filepath.Abs("../../../rules/yara")
	ex := filepath.Join(s.dir, "shipped.toml")
	os.WriteFile(ex, bytes.Replace(shipped, []byte(`dir = "/etc/domainm/rules"`), []byte(`dir = "`+rulesDir+`"`), 1), 0o644)
	out, err = exec.Command(bin, "run", "--config", ex, "--check-config").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration is valid, 1 warning(s)") || !strings.Contains(string(out), "target.memory: warning:") {
		t.Errorf("image/domainm.toml: %v\n%s", err, out)
	}
}

// TestRunEndToEnd runs domainm on a memory file: a planted string is alerted, its removal
// is alerted as gone, a rule added at run time finds more, a broken rule is alerted with
// file and line while the old set keeps detecting, the migration handshake works over
// the control socket (and refuses a different guest), and SIGTERM stops it in time.
func TestRunEndToEnd(t *testing.T) {
	s := newSetup(t, "", "")
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	const alertWait = 30 * time.Second

	waitUntil(t, "evil alert", alertWait, func() bool { return len(s.alertsWith(t, "memory-match", "evil")) == 1 })
	first := s.alertsWith(t, "memory-match", "evil")[0]
	if first.DomainM.State != "new" || !strings.Contains(first.Message, fmt.Sprintf("%#x", e2eEvilAt)) {
		t.Errorf("first alert: %+v", first)
	}

	s.poke(t, e2eEvilAt, strings.Repeat("\x00", len(e2eEvil)))
	waitUntil(t, "evil gone", alertWait, func() bool { return len(s.alertsWith(t, "memory-match-gone", "evil")) == 1 })
	if g := s.alertsWith(t, "memory-match-gone", "evil")[0]; g.DomainM.FindingID != first.DomainM.FindingID {
		t.Errorf("gone finding id %s, new had %s", g.DomainM.FindingID, first.DomainM.FindingID)
	}
	if k := len(s.alertsWith(t, "memory-match", "evil")); k != 1 {
		t.Errorf("evil alerted %d times while present, want once", k)
	}

	// Hot reload: a new rule finds what is already in memory.
	s.rule(t, "b.yar", `rule second { strings: $a = "`+e2eSecond+`" condition: $a }`)
	waitUntil(t, "second alert after reload", alertWait, func() bool { return len(s.alertsWith(t, "memory-match", "second")) == 1 })

	// A broken rule: alerted with file:line, not loaded; the running set still detects.
	s.rule(t, "c.yar", "rule fine { condition: false }\nrule broken { condition: $missing }")
	waitUntil(t, "rule error alert", alertWait, func() bool { return len(s.alertsWith(t, "rule-error", "")) > 0 })
	re := s.alertsWith(t, "rule-error", "")[0]
	if !strings.HasSuffix(re.DomainM.RuleFile, "c.yar") || re.DomainM.RuleLine != 2 || !strings.Contains(re.Message, "c.yar:2") {
		t.Errorf("rule error alert: %+v", re)
	}
	s.poke(t, e2eEvilAt+0x1000, e2eEvil)
	waitUntil(t, "evil found again by the old set", alertWait, func() bool { return len(s.alertsWith(t, "memory-match", "evil")) == 2 })
	if k := len(s.alertsWith(t, "memory-match-gone", "second")); k != 0 {
		t.Errorf("second reported gone after a failed reload")
	}
	// The broken file is a health problem of its own (rules-broken), not an empty set.
	waitUntil(t, "rules-broken in the health", alertWait, func() bool {
		recs, err := control.ReadStateLog(filepath.Join(s.state, control.StateLogFile))
		if err != nil || len(recs) == 0 {
			return false
		}
		last := recs[len(recs)-1]
		return slices.Contains(last.Problems, control.ProblemRulesBroken) && !slices.Contains(last.Problems, control.ProblemRulesEmpty)
	})

	// The migration handshake.
	ctx, c := s.dial(t)
	if fi, err := os.Stat(s.sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v, mode %v", err, fi.Mode().Perm())
	}
	r, err := c.Do(ctx, "prepare", nil)
	if err != nil || !r.OK || r.State != "quiesced" {
		t.Fatalf("prepare: %+v, %v", r, err)
	}
	ram, _ := os.ReadFile(s.ram)
	dst := filepath.Join(s.dir, "ram-dst")
	os.WriteFile(dst, ram, 0o600)
	changed := filepath.Join(s.dir, "ram-changed")
	for i := 0; i < len(ram); i += 512 {
		ram[i] ^= 0x5a
	}
	os.WriteFile(changed, ram, 0o600)
	r, err = c.Do(ctx, "resume", control.ResumeArgs{Source: "file:" + changed, Layout: "flat"})
	if err != nil || r.OK || r.Code != "guest_changed" || r.State != "quiesced" {
		t.Errorf("resume on a changed guest: %+v, %v", r, err)
	}
	r, err = c.Do(ctx, "resume", control.ResumeArgs{Source: "file:" + dst, Layout: "flat",
		Target: control.TargetInfo{Name: "e2e-target", Host: "host-b"}})
	if err != nil || !r.OK || r.State != "monitoring" {
		t.Fatalf("resume: %+v, %v", r, err)
	}
	r, _ = c.Do(ctx, "status", nil)
	if r.Source != "file:"+dst || r.Target == nil || r.Target.Host != "host-b" {
		t.Errorf("status after resume: %+v", r)
	}
	// Detection goes on at the destination.
	f, _ := os.OpenFile(dst, os.O_WRONLY, 0)
	f.WriteAt([]byte(strings.Repeat("\x00", len(e2eSecond))), e2eSecondAt)
	f.Close()
	waitUntil(t, "second gone at the destination", alertWait, func() bool { return len(s.alertsWith(t, "memory-match-gone", "second")) == 1 })
	if k := len(s.alertsWith(t, "memory-source-guest-changed", "")); k != 1 {
		t.Errorf("%d guest-changed alerts, want 1", k)
	}

	took, code := p.stop(t)
	t.Logf("stopped %v after SIGTERM", took)
	if code != 0 {
		t.Errorf("exit code %d", code)
	}
	states := readStates(t, filepath.Join(s.state, "events.jsonl"))
	// The second "monitoring" is the health change the broken rule file made (the state
	// log records every change of state or problems).
	want := "starting monitoring monitoring quiescing quiesced resuming quiesced resuming monitoring stopping stopped"
	if got := strings.Join(states, " "); got != want {
		t.Errorf("state log:\n got %s\nwant %s", got, want)
	}
}

// TestRunReloadOnSIGHUP: with the watcher's debounce out of the way, SIGHUP (what the
// unit's ExecReload sends) reloads the rules.
func TestRunReloadOnSIGHUP(t *testing.T) {
	s := newSetup(t, "", "")
	cfg, _ := os.ReadFile(s.cfg)
	os.WriteFile(s.cfg, bytes.Replace(cfg, []byte(`debounce = "200ms"`), []byte(`debounce = "1h"`), 1), 0o644)
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "evil alert", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-match", "evil")) == 1 })
	s.rule(t, "b.yar", `rule second { strings: $a = "`+e2eSecond+`" condition: $a }`)
	time.Sleep(1500 * time.Millisecond) // a pass or more with the old set
	if k := len(s.alertsWith(t, "memory-match", "second")); k != 0 {
		t.Fatal("rules reloaded before SIGHUP despite the 1h debounce")
	}
	p.Signal(syscall.SIGHUP)
	waitUntil(t, "second alert after SIGHUP", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-match", "second")) == 1 })
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func readStates(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var rec struct {
			Time  string `json:"time"`
			State string `json:"state"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("state log line %q: %v", line, err)
		}
		if _, err := time.Parse(time.RFC3339Nano, rec.Time); err != nil {
			t.Errorf("state log time %q: %v", rec.Time, err)
		}
		out = append(out, rec.State)
	}
	return out
}

// TestRunDiskChecks: with a disk image configured, the first check records the baseline
// (alerted), a file changed inside the image afterwards is alerted once however many
// checks see it, and memory monitoring runs alongside.
func TestRunDiskChecks(t *testing.T) {
	s, p, img := startDiskDaemon(t)
	waitUntil(t, "baseline alert", 30*time.Second, func() bool { return len(s.alertsWith(t, "disk-baseline-created", "")) == 1 })
	if _, err := os.Stat(filepath.Join(s.state, "baseline.db")); err != nil {
		t.Fatalf("baseline not in the state folder: %v", err)
	}
	s.rule(t, "disk.yar", `rule implant_file { strings: $a = "IMPLANTED-IN-DAEMON" condition: $a }`)
	ext4test.Overwrite(t, img, "/usr/bin/daemon", []byte("\x7fELF-IMPLANTED-IN-DAEMON"))
	changed := func() []fileAlert {
		var out []fileAlert
		for _, a := range s.alertsWith(t, "file-changed", "") {
			if a.File != nil && a.File.Path == "/usr/bin/daemon" {
				out = append(out, a)
			}
		}
		return out
	}
	waitUntil(t, "file-changed alert", 30*time.Second, func() bool { return len(changed()) == 1 })
	// The changed file was YARA-scanned with the running rules.
	waitUntil(t, "YARA match in the changed file", 30*time.Second, func() bool {
		m := s.alertsWith(t, "file-match", "implant_file")
		return len(m) == 1 && m[0].File != nil && m[0].File.Path == "/usr/bin/daemon"
	})
	ctx, c := s.dial(t)
	r, _ := c.Do(ctx, "status", nil)
	checks := r.DiskChecks
	waitUntil(t, "three more disk checks", 30*time.Second, func() bool {
		r, _ := c.Do(ctx, "status", nil)
		return r.DiskChecks >= checks+3
	})
	if k := len(changed()); k != 1 {
		t.Errorf("the change was alerted %d times, want once", k)
	}
	if k := len(s.alertsWith(t, "file-match", "implant_file")); k != 1 {
		t.Errorf("the file match was alerted %d times, want once", k)
	}
	if k := len(s.alertsWith(t, "memory-match", "evil")); k != 1 {
		t.Errorf("memory finding alerted %d times alongside disk checks", k)
	}
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// freePort is a TCP port on 127.0.0.1 that was free a moment ago.
var freePort = testenv.FreePort

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestRunLiveVM runs domainm against a real QEMU guest (Linux under TCG, RAM in a
// shared file): a string a guest process keeps in memory is alerted, and the
// handshake's fingerprints hold on real guest RAM while the guest is stopped.
func TestRunLiveVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	// The marker exists only once the guest has run: the script holds it in two halves.
	const marker = "DOMAINM-LIVE-IMPLANT-7f3a"
	script := `mount -t tmpfs tmpfs /tmp
a=DOMAINM-LIVE; b=IMPLANT-7f3a
m="$a-$b"
echo "$m" > /tmp/implant.txt
echo LIVE-READY
while true; do sleep 1; : "$m"; done`
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, script, nil); err != nil {
		t.Fatal(err)
	}
	vm := vmtest.Start(t, vmtest.Config{Memory: 256 << 20, Kernel: kernel, Initrd: initrd,
		Append: "quiet panic=-1", Timeout: 60 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := vm.WaitSerial(ctx, "LIVE-READY"); err != nil {
		t.Fatalf("guest did not come up: %v\n%s", err, vm.Serial())
	}
	t.Logf("guest up under %s, RAM in %s", vm.Accel, vm.RAMFile)

	s := newSetup(t, "", "")
	cfg, _ := os.ReadFile(s.cfg)
	cfg = bytes.Replace(cfg, []byte("file:"+s.ram), []byte("file:"+vm.RAMFile+"\"\nlayout = \"q35"), 1)
	os.WriteFile(s.cfg, cfg, 0o644)
	s.rule(t, "a.yar", `rule live { strings: $a = "`+marker+`" condition: $a }`)

	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "the guest's implant alerted", 60*time.Second, func() bool { return len(s.alertsWith(t, "memory-match", "live")) == 1 })

	c, err := control.Dial(ctx, s.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := c.Do(ctx, "prepare", nil)
	if err != nil || !r.OK || r.State != "quiesced" {
		t.Fatalf("prepare: %+v, %v", r, err)
	}
	r, err = c.Do(ctx, "resume", control.ResumeArgs{Source: "file:" + vm.RAMFile, Layout: "q35"})
	if err != nil || !r.OK || r.State != "monitoring" {
		t.Fatalf("resume on the same stopped guest: %+v, %v", r, err)
	}
	if err := vm.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	r, _ = c.Do(ctx, "status", nil)
	passes := r.Passes
	waitUntil(t, "passes after resume", 60*time.Second, func() bool {
		r, _ := c.Do(ctx, "status", nil)
		return r.Passes >= passes+2
	})
	if k := len(s.alertsWith(t, "memory-match", "live")); k != 1 {
		t.Errorf("implant alerted %d times, want once", k)
	}
	if k := len(s.alertsWith(t, "memory-match-gone", "live")); k != 0 {
		t.Errorf("implant reported gone while the guest still holds it")
	}
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// TestRunNoLeaks drives a daemon through many passes, prepare/resume cycles and rule
// reloads and checks that its goroutines and open files come back to where they were:
// it is meant to run for months.
func TestRunNoLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	s, p, base := startMetricsDaemon(t)
	metric := func(name string) float64 {
		for _, l := range strings.Split(httpGet(t, base), "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				var f float64
				fmt.Sscan(v, &f)
				return f
			}
		}
		t.Fatalf("no %s in /metrics", name)
		return 0
	}
	waitUntil(t, "first pass", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-match", "evil")) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cycle := func(i int) {
		c, err := control.Dial(ctx, s.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if r, err := c.Do(ctx, "prepare", nil); err != nil || !r.OK {
			t.Fatalf("prepare %d: %+v %v", i, r, err)
		}
		if r, err := c.Do(ctx, "resume", control.ResumeArgs{Source: "file:" + s.ram}); err != nil || !r.OK {
			t.Fatalf("resume %d: %+v %v", i, r, err)
		}
	}
	cycle(0)
	s.rule(t, "r0.yar", `rule r0 { condition: false }`)
	time.Sleep(1500 * time.Millisecond)
	g0, fd0 := metric("go_goroutines"), metric("process_open_fds")
	const cycles = 40
	for i := 1; i <= cycles; i++ {
		cycle(i)
		if i%4 == 0 { // a reload every fourth cycle
			s.rule(t, "r0.yar", fmt.Sprintf(`rule r0 { strings: $a = "never-%d" condition: $a }`, i))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A leak stays; a pass or a rules profile in flight (a few goroutines) ends: sample
	// until the counts are back within bounds or 20 s have passed (one sample after a
	// fixed 1.5 s caught a pass's workers once: 18 -> 22).
	var g1, fd1 float64
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		g1, fd1 = metric("go_goroutines"), metric("process_open_fds")
		if g1 <= g0+3 && fd1 <= fd0+2 || time.Now().After(end) {
			break
		}
	}
	t.Logf("after %d prepare/resume cycles and %d reloads: goroutines %v -> %v, open fds %v -> %v, passes %v, rss %.1f MiB",
		cycles, cycles/4, g0, g1, fd0, fd1, metric(`domainm_memory_passes_total{result="complete"}`), metric("process_resident_memory_bytes")/(1<<20))
	if g1 > g0+3 {
		t.Errorf("goroutines grew from %v to %v", g0, g1)
	}
	if fd1 > fd0+2 {
		t.Errorf("open files grew from %v to %v", fd0, fd1)
	}
	if k := len(s.alertsWith(t, "memory-match", "evil")); k != 1 {
		t.Errorf("evil alerted %d times over the cycles, want once", k)
	}
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
