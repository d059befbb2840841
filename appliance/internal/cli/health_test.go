package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/image/testenv"
)

// healthView is what one party says about the supervisor's health.
type healthView struct {
	state    string
	healthy  bool
	problems []string
}

func (v healthView) String() string {
	return fmt.Sprintf("state=%s healthy=%v problems=%v", v.state, v.healthy, v.problems)
}

// parties reads the four views of health the issue asks to agree: domainm status (over
// the control socket, with its exit code), GET /healthz, GET /metrics and the last line
// of the state log.
type parties struct {
	t    *testing.T
	s    *testSetup
	base string // http://127.0.0.1:PORT
}

func (p parties) status() (healthView, control.Response, int) {
	cmd := exec.Command(domainmBinary(p.t), "status", "--json", "--socket", p.s.sock)
	out, _ := cmd.Output()
	var r control.Response
	json.Unmarshal(out, &r)
	v := healthView{state: r.State}
	if r.Health != nil {
		v.healthy = r.Health.Healthy
		for _, pr := range r.Health.Problems {
			v.problems = append(v.problems, pr.Code)
		}
	}
	return v, r, cmd.ProcessState.ExitCode()
}

func (p parties) healthz() (int, string) {
	resp, err := http.Get(p.base + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var metricLine = regexp.MustCompile(`^([a-z_]+)(\{[^}]*\})? (\S+)$`)

func (p parties) metrics() map[string]string {
	resp, err := http.Get(p.base + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if m := metricLine.FindStringSubmatch(l); m != nil {
			out[m[1]+m[2]] = m[3]
		}
	}
	return out
}

func (p parties) metricsView() healthView {
	m := p.metrics()
	v := healthView{healthy: m["domainm_healthy"] == "1"}
	for k, val := range m {
		if st, ok := strings.CutPrefix(k, `domainm_state{state="`); ok && val == "1" {
			v.state = strings.TrimSuffix(st, `"}`)
		}
		if pr, ok := strings.CutPrefix(k, `domainm_health_problem{problem="`); ok && val == "1" {
			v.problems = append(v.problems, strings.TrimSuffix(pr, `"}`))
		}
	}
	slices.Sort(v.problems)
	if (m["domainm_monitoring"] == "1") != (v.state == "monitoring") {
		v.state += "(domainm_monitoring=" + m["domainm_monitoring"] + ")"
	}
	return v
}

func (p parties) stateLog() (healthView, []control.StateRecord) {
	recs, _ := control.ReadStateLog(filepath.Join(p.s.state, control.StateLogFile))
	if len(recs) == 0 {
		return healthView{}, nil
	}
	last := recs[len(recs)-1]
	return healthView{state: last.State, healthy: last.Healthy, problems: last.Problems}, recs
}

// agree waits until all four parties say state, healthy, and problems that include
// want (and, when healthy, none); it fails naming each party's view otherwise.
func (p parties) agree(what, state string, healthy bool, want ...string) control.Response {
	p.t.Helper()
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		sv, r, code := p.status()
		hcode, hbody := p.healthz()
		mv := p.metricsView()
		lv, _ := p.stateLog()
		ok := true
		for _, v := range []healthView{sv, mv, lv} {
			if v.state != state || v.healthy != healthy {
				ok = false
			}
			for _, w := range want {
				if !slices.Contains(v.problems, w) {
					ok = false
				}
			}
			if healthy && len(v.problems) > 0 {
				ok = false
			}
		}
		wantCode, wantStatusExit := 200, 0
		if !healthy {
			wantCode, wantStatusExit = 503, 1
		}
		if hcode != wantCode || code != wantStatusExit {
			ok = false
		}
		for _, w := range want {
			if !strings.Contains(hbody, w) {
				ok = false
			}
		}
		if ok {
			return r
		}
		last = fmt.Sprintf("status (exit %d): %v\n/healthz: %d %q\n/metrics: %v\nstate log: %v", code, sv, hcode, strings.TrimSpace(hbody), mv, lv)
		time.Sleep(200 * time.Millisecond)
	}
	p.t.Fatalf("%s: parties do not agree on state=%s healthy=%v problems⊇%v:\n%s", what, state, healthy, want, last)
	return control.Response{}
}

// syslogSink is a UDP syslog receiver on loopback.
type syslogSink struct{ *testenv.Datagrams }

func listenSyslog(t *testing.T) *syslogSink {
	t.Helper()
	return &syslogSink{testenv.ListenDatagrams(t, "udp", "127.0.0.1:0")}
}

func (s *syslogSink) all() []string { return s.All() }

// healthSetup is newSetup with a 64 MiB RAM file, a UDP syslog sink on loopback and
// the metrics listener.
func healthSetup(t *testing.T) (*testSetup, *syslogSink, parties) {
	t.Helper()
	port := freePort(t)
	syslog := listenSyslog(t)
	s := newSetup(t, "", fmt.Sprintf(`
[[alerts.sink]]
name = "syslog"
type = "syslog"
transport = "udp"
address = "%s"

[metrics]
listen = "127.0.0.1:%d"
`, syslog.Addr(), port))
	if err := os.Truncate(s.ram, healthRAM); err != nil {
		t.Fatal(err)
	}
	return s, syslog, parties{t: t, s: s, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
}

const healthRAM = 64 << 20

// stateRuns is the state log's states with repeats (health-only lines) folded.
func (p parties) stateRuns() string {
	_, recs := p.stateLog()
	var states []string
	for _, r := range recs {
		if len(states) == 0 || states[len(states)-1] != r.State {
			states = append(states, r.State)
		}
	}
	return strings.Join(states, " ")
}

// TestRunStartsBeforeTarget starts `domainm run` before the target's RAM file exists:
// it must not exit (with Restart=on-failure that is a restart loop with an alert every
// 5 s) but report READY=1 and "waiting for the target", agree on it in all four places,
// and start monitoring as soon as the file appears.
func TestRunStartsBeforeTarget(t *testing.T) {
	s, _, pt := healthSetup(t)
	parked := s.ram + ".parked"
	if err := os.Rename(s.ram, parked); err != nil { // the target has not started yet
		t.Fatal(err)
	}
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool {
		select {
		case <-p.Done():
			t.Fatalf("domainm exited while waiting for the target: %v", p.Err())
		default:
		}
		return n.index("READY=1") >= 0
	})
	pt.agree("before the target exists", control.StateWaiting, false, control.ProblemNotMonitored)
	if !slices.ContainsFunc(n.all(), func(m string) bool { return strings.HasPrefix(m, "STATUS=waiting for the target e2e-target") }) {
		t.Errorf("no STATUS=waiting for the target...; messages %q", n.all())
	}
	waitUntil(t, "waiting alert", 10*time.Second, func() bool { return len(s.alertsWith(t, "memory-source-waiting", "")) == 1 })
	select {
	case <-p.Done():
		t.Fatalf("domainm exited while waiting for the target: %v", p.Err())
	case <-time.After(2 * time.Second):
	}

	// The target starts: monitoring at once (the folder is watched).
	appeared := time.Now()
	if err := os.Rename(parked, s.ram); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "evil alert", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-match", "evil")) == 1 })
	t.Logf("first finding %v after the RAM file appeared", time.Since(appeared).Round(time.Millisecond))
	pt.agree("monitoring", control.StateMonitoring, true)
	if len(s.alertsWith(t, "memory-source-appeared", "")) != 1 {
		t.Error("no memory-source-appeared alert")
	}
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if got, want := pt.stateRuns(), "starting waiting monitoring stopping stopped"; got != want {
		t.Errorf("state log states:\n got %s\nwant %s", got, want)
	}
}

// TestRunHealthAgrees runs `domainm run` on a 64 MiB RAM file, truncates it to 16 MiB,
// restores it, removes it, brings it back and empties the rules folder. After each step
// status (and its exit code), /healthz, /metrics and the state log must say the same;
// blind spots (how much, which ranges, why) and the missing source are alerted, and
// every alert names the target, in the file sink's JSON and in the syslog SD element.
func TestRunHealthAgrees(t *testing.T) {
	s, syslog, pt := healthSetup(t)
	parked := s.ram + ".parked"
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "evil alert", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-match", "evil")) == 1 })
	pt.agree("monitoring", control.StateMonitoring, true)

	// The RAM file truncated to 16 of 64 MiB: 48 MiB of blind spots.
	if err := os.Truncate(s.ram, 16<<20); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "blind-spots alert", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-scan-blind-spots", "")) == 1 })
	r := pt.agree("truncated", control.StateMonitoring, false, control.ProblemBlindSpots)
	u := r.Health.Unscanned
	if u == nil || u.Bytes != 48<<20 || u.Blocks != 48 || u.Reasons["unreadable"] != 48 || u.RangesTotal != 1 ||
		len(u.Ranges) != 1 || u.Ranges[0].Start != "0x1000000" || u.Ranges[0].End != "0x4000000" || u.Ranges[0].First == "" {
		t.Errorf("status unscanned = %+v", u)
	}
	m := pt.metrics()
	if m["domainm_memory_unscanned_bytes"] != "5.0331648e+07" || m[`domainm_memory_unscanned_blocks{reason="unreadable"}`] != "48" ||
		m[`domainm_memory_passes_total{result="partial"}`] == "0" {
		t.Errorf("metrics: unscanned bytes %s, blocks %s, partial passes %s", m["domainm_memory_unscanned_bytes"],
			m[`domainm_memory_unscanned_blocks{reason="unreadable"}`], m[`domainm_memory_passes_total{result="partial"}`])
	}
	var bs struct {
		Message string `json:"message"`
		DomainM struct {
			Meta map[string]string `json:"meta"`
		} `json:"domainm"`
	}
	for _, l := range s.rawAlerts(t) {
		if strings.Contains(l, `"memory-scan-blind-spots"`) {
			json.Unmarshal([]byte(l), &bs)
		}
	}
	if bs.DomainM.Meta["unscanned_bytes"] != "50331648" || !strings.Contains(bs.DomainM.Meta["unscanned_ranges"], "0x1000000-0x4000000 unreadable") ||
		!strings.Contains(bs.Message, "48.0 MiB") {
		t.Errorf("blind-spots alert: %q %v", bs.Message, bs.DomainM.Meta)
	}
	if !regexp.MustCompile(`msg="memory block not scanned" gpa=0x1000000 size=1048576 reason=unreadable failed_at=20\d\d-`).MatchString(p.stderr.String()) {
		t.Error("no per-block log line with the time of the failure")
	}
	if k := len(s.alertsWith(t, "memory-match-gone", "evil")); k != 0 {
		t.Error("a pass with blind spots reported a finding gone")
	}

	// Restored: scanned completely again.
	if err := os.Truncate(s.ram, healthRAM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "complete alert", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-scan-complete", "")) == 1 })
	pt.agree("restored", control.StateMonitoring, true)

	// Removed (the target stopped): waiting, in all four.
	if err := os.Rename(s.ram, parked); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "gone alert", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-source-gone", "")) == 1 })
	pt.agree("removed", control.StateWaiting, false, control.ProblemNotMonitored)
	if err := os.Rename(parked, s.ram); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "back alert", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-source-back", "")) == 1 })
	pt.agree("back", control.StateMonitoring, true)

	// No rules: not healthy.
	os.Remove(filepath.Join(s.rules, "a.yar"))
	pt.agree("rules emptied", control.StateMonitoring, false, control.ProblemRulesEmpty)
	s.rule(t, "a.yar", `rule evil { strings: $a = "`+e2eEvil+`" condition: $a }`)
	pt.agree("rules back", control.StateMonitoring, true)

	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if got, want := pt.stateRuns(), "starting monitoring waiting monitoring stopping stopped"; got != want {
		t.Errorf("state log states:\n got %s\nwant %s", got, want)
	}

	// Every alert names its target: JSON (file sink) and syslog SD.
	lines := s.rawAlerts(t)
	if len(lines) < 8 {
		t.Fatalf("only %d alerts in the file sink", len(lines))
	}
	for _, l := range lines {
		var a struct {
			Event   struct{ Action string }
			DomainM struct {
				Target *struct{ Name, UUID string }
			} `json:"domainm"`
		}
		json.Unmarshal([]byte(l), &a)
		if a.DomainM.Target == nil || a.DomainM.Target.Name != "e2e-target" || a.DomainM.Target.UUID != "123e4567-e89b-12d3-a456-426614174000" {
			t.Errorf("alert %s does not name its target: %s", a.Event.Action, l)
		}
	}
	waitUntil(t, "syslog copies", 20*time.Second, func() bool { return len(syslog.all()) >= len(lines) })
	for _, msg := range syslog.all() {
		head, _, _ := strings.Cut(msg, "] ")
		if !strings.Contains(head, ` target="e2e-target"`) || !strings.Contains(head, ` uuid="123e4567-e89b-12d3-a456-426614174000"`) {
			t.Errorf("syslog SD does not name the target: %s", head)
		}
	}
}

// rawAlerts returns the file sink's lines.
func (s *testSetup) rawAlerts(t *testing.T) []string {
	b, err := os.ReadFile(s.alerts)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if json.Valid(l) {
			out = append(out, string(l))
		}
	}
	return out
}

// TestRunBlindSpotTimeout: blocks that hit memory.yara_timeout are blind spots like
// unreadable ones: alerted with reason timeout, in status, /healthz, metrics and the
// state log alike.
func TestRunBlindSpotTimeout(t *testing.T) {
	s, _, pt := healthSetup(t)
	cfg, _ := os.ReadFile(s.cfg)
	os.WriteFile(s.cfg, bytes.Replace(cfg, []byte("workers = 1\n"), []byte("workers = 1\nyara_timeout = \"1s\"\n"), 1), 0o644)
	// Slow on any window (4096 x 10^6 iterations; filesize is undefined in a memory scan).
	s.rule(t, "slow.yar", `rule slow { condition: for any i in (0..4095) : (for any j in (0..1000000) : (i + j == -1)) }`)
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "blind-spots alert", 60*time.Second, func() bool { return len(s.alertsWith(t, "memory-scan-blind-spots", "")) == 1 })
	r := pt.agree("timeouts", control.StateMonitoring, false, control.ProblemBlindSpots)
	// The blocks whose windows hold the markers at 5 MiB and 9 MiB time out: each and
	// the block before it (its window reaches 4 KiB into the next block).
	if u := r.Health.Unscanned; u == nil || u.Reasons["timeout"] != 4 || u.Bytes != 4<<20 || u.RangesTotal != 2 ||
		u.Ranges[0].Start != "0x400000" || u.Ranges[0].End != "0x600000" || u.Ranges[0].Reason != "timeout" ||
		u.Ranges[1].Start != "0x800000" || u.Ranges[1].End != "0xa00000" {
		t.Errorf("status unscanned = %+v", u)
	}
	if m := pt.metrics(); m[`domainm_memory_unscanned_blocks{reason="timeout"}`] != "4" {
		t.Errorf("domainm_memory_unscanned_blocks{reason=timeout} = %q", m[`domainm_memory_unscanned_blocks{reason="timeout"}`])
	}
	os.Remove(filepath.Join(s.rules, "slow.yar"))
	waitUntil(t, "complete alert", 60*time.Second, func() bool { return len(s.alertsWith(t, "memory-scan-complete", "")) == 1 })
	pt.agree("slow rule removed", control.StateMonitoring, true)
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
