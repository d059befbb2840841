package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
)

// metricValue is the value of the series named exactly series ("name{labels}") in
// a /metrics body, or -1 when it is missing.
func metricValue(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// editConfig replaces old by new in the setup's config file (failing when old is not
// there, so a changed setup cannot make the test pass without reloading anything).
func (s *testSetup) editConfig(t *testing.T, old, new string) {
	t.Helper()
	b, err := os.ReadFile(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("config has no %q:\n%s", old, b)
	}
	if err := os.WriteFile(s.cfg, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReloadConfig drives systemctl reload as an operator does: edit domainm.toml,
// send SIGHUP to the running daemon. A live key (memory.interval) takes effect both
// ways (passes stop at 1h, resume at once at 1s); a key that needs a restart
// (target.name) is reported by name and keeps its running value; a file with errors
// keeps the running configuration, each error with file:line and key, in the log, an
// alert and the metrics.
func TestReloadConfig(t *testing.T) {
	s, p, base := startMetricsDaemon(t)
	passes := func() float64 {
		return metricValue(httpGet(t, base), `domainm_memory_passes_total{result="complete"}`)
	}
	waitUntil(t, "two complete passes", 30*time.Second, func() bool { return passes() >= 2 })
	hup := func() { t.Helper(); p.Signal(syscall.SIGHUP) }

	// memory.interval 1s -> 1h (live) and target.name (restart only).
	s.editConfig(t, `interval = "1s"`, `interval = "1h"`)
	s.editConfig(t, `name = "e2e-target"`, `name = "renamed-target"`)
	hup()
	var reloaded fileAlert
	waitUntil(t, "config-reloaded alert", 20*time.Second, func() bool {
		a := s.alertsWith(t, "config-reloaded", "")
		if len(a) > 0 {
			reloaded = a[0]
		}
		return len(a) > 0
	})
	t.Logf("alert: %s", reloaded.Message)
	for _, want := range []string{`applied: memory.interval ("1s" -> "1h0m0s")`, `not applied until a restart: target.name ("e2e-target" -> "renamed-target")`} {
		if !strings.Contains(reloaded.Message, want) {
			t.Errorf("config-reloaded message lacks %q", want)
		}
	}
	if !strings.Contains(p.stderr.String(), `key="target.name (\"e2e-target\" -> \"renamed-target\")"`) {
		t.Errorf("log does not name target.name as needing a restart:\n%s", p.stderr.String())
	}
	time.Sleep(1500 * time.Millisecond) // a pass running at the reload ends
	before := passes()
	time.Sleep(4 * time.Second)
	if after := passes(); after != before {
		t.Errorf("memory.interval 1h: complete passes went from %v to %v in 4 s", before, after)
	}
	st := statusJSON(t, s)
	if st.Target == nil || st.Target.Name != "e2e-target" {
		t.Errorf("status target %+v: want the running name e2e-target (a restart applies the new one)", st.Target)
	}

	// Back to 1s: the next pass is moved forward at once.
	s.editConfig(t, `interval = "1h"`, `interval = "1s"`)
	hup()
	waitUntil(t, "passes again after memory.interval 1s", 15*time.Second, func() bool { return passes() >= before+2 })

	// A bad file: two errors; the running configuration stays.
	s.editConfig(t, `interval = "1s"`, "interval = 5\nbogus_key = 1")
	hup()
	var failed fileAlert
	waitUntil(t, "config-reload-failed alert", 20*time.Second, func() bool {
		a := s.alertsWith(t, "config-reload-failed", "")
		if len(a) > 0 {
			failed = a[0]
		}
		return len(a) > 0
	})
	line := lineOf(t, s.cfg, "interval = 5")
	for _, want := range []string{
		fmt.Sprintf("%s:%d: memory.interval: ", s.cfg, line),
		"needs a unit",
		fmt.Sprintf("%s:%d: memory.bogus_key: unknown key", s.cfg, line+1),
		"the running configuration stays",
	} {
		if !strings.Contains(failed.Message, want) {
			t.Errorf("config-reload-failed message lacks %q:\n%s", want, failed.Message)
		}
	}
	if !regexp.MustCompile(`configuration not reloaded.*memory\.interval`).MatchString(p.stderr.String()) {
		t.Errorf("log lacks the reload error")
	}
	body := httpGet(t, base)
	if v := metricValue(body, "domainm_config_last_reload_successful"); v != 0 {
		t.Errorf("domainm_config_last_reload_successful = %v after a bad file, want 0", v)
	}
	if v := metricValue(body, `domainm_config_reloads_total{result="failed"}`); v != 1 {
		t.Errorf(`domainm_config_reloads_total{result="failed"} = %v, want 1`, v)
	}
	if v := metricValue(body, `domainm_config_reloads_total{result="ok"}`); v != 2 {
		t.Errorf(`domainm_config_reloads_total{result="ok"} = %v, want 2`, v)
	}
	// Still running at 1s.
	now := passes()
	waitUntil(t, "passes go on with the running configuration", 15*time.Second, func() bool { return passes() >= now+2 })
	if _, code := p.stop(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// lineOf is the 1-based line of the first line of file containing text.
func lineOf(t *testing.T, file, text string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, text) {
			return i + 1
		}
	}
	t.Fatalf("%s has no line with %q", file, text)
	return 0
}

// statusJSON is domainm status --json of the setup's daemon.
func statusJSON(t *testing.T, s *testSetup) statusReply {
	t.Helper()
	out, err := exec.Command(domainmBinary(t), "status", "--json", "--socket", s.sock).Output()
	var r statusReply
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("domainm status --json: %v %v\n%s", err, jerr, out)
	}
	return r
}

// TestReloadLogrotate rotates the file sink's file with the real logrotate and the
// shipped snippet (image/deb/domainm.logrotate, its path and its postrotate command
// pointed at this test's daemon), with a state file of the test's own: the daemon
// writes on into the new file, the rotated one keeps what came before, and no alert
// is lost or written twice.
func TestReloadLogrotate(t *testing.T) {
	if _, err := exec.LookPath("logrotate"); err != nil {
		t.Fatal("logrotate not installed (make deps installs it)")
	}
	s := newSetup(t, "", "")
	n := listenNotify(t, s.dir)
	p := startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	waitUntil(t, "the finding's alert", 30*time.Second, func() bool { return len(s.alertsWith(t, "memory-match", "evil")) == 1 })

	snippet, err := os.ReadFile("../../../image/deb/domainm.logrotate")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(snippet)
	for old, new := range map[string]string{
		"/var/lib/domainm/alerts.jsonl":    s.alerts,
		"systemctl reload domainm.service": fmt.Sprintf("kill -HUP %d", p.Pid()),
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("the shipped logrotate snippet has no %q:\n%s", old, conf)
		}
		conf = strings.ReplaceAll(conf, old, new)
	}
	confPath := filepath.Join(s.dir, "logrotate.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("logrotate", "-f", "-s", filepath.Join(s.dir, "logrotate.state"), confPath).CombinedOutput(); err != nil {
		t.Fatalf("logrotate -f: %v\n%s", err, out)
	}
	rotated, _ := filepath.Glob(s.alerts + "-*")
	if len(rotated) != 1 {
		t.Fatalf("rotated files %q, want one (dateext, delaycompress)", rotated)
	}
	// The reload's own alert and a new finding go to the new file.
	s.rule(t, "b.yar", `rule second { strings: $a = "`+e2eSecond+`" condition: $a }`)
	waitUntil(t, "alerts in the new file", 30*time.Second, func() bool {
		return len(s.alertsWith(t, "config-reloaded", "")) == 1 && len(s.alertsWith(t, "memory-match", "second")) == 1
	})
	oldIDs, newIDs := eventIDs(t, rotated[0]), eventIDs(t, s.alerts)
	if len(oldIDs) == 0 {
		t.Fatal("the rotated file is empty")
	}
	for id := range newIDs {
		if oldIDs[id] {
			t.Errorf("event %s in both files", id)
		}
	}
	old := readAlertFile(t, rotated[0])
	if !hasAction(old, "memory-match") || hasAction(old, "config-reloaded") {
		t.Errorf("rotated file: want the finding from before the rotation and not the reload's alert")
	}
	p.stop(t)
	if st, err := os.Stat(s.alerts); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o640 {
		t.Errorf("new alert file mode %v; want 0640 (create 0640)", st.Mode().Perm())
	}
	t.Logf("rotated %d alerts, %d in the new file", len(oldIDs), len(newIDs))
}

func eventIDs(t *testing.T, path string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct {
			Event struct {
				ID string `json:"id"`
			} `json:"event"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Errorf("%s: a line that is not JSON: %q", path, sc.Text())
			continue
		}
		if ids[e.Event.ID] {
			t.Errorf("%s: event %s twice", path, e.Event.ID)
		}
		ids[e.Event.ID] = true
	}
	return ids
}

func readAlertFile(t *testing.T, path string) []fileAlert {
	t.Helper()
	s := &testSetup{alerts: path}
	return s.readAlerts(t)
}

func hasAction(as []fileAlert, action string) bool {
	for _, a := range as {
		if a.Event.Action == action {
			return true
		}
	}
	return false
}

// statusReply is domainm status --json: the control protocol's status response.
type statusReply = control.Response
