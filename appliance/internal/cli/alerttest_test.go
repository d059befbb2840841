package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/image/rsyslogtest"
)

// startPlainRsyslog is a real rsyslogd (image/rsyslogtest) with one plain TCP input,
// "plain", on 127.0.0.1:port that writes each message's raw text, one per line.
func startPlainRsyslog(t *testing.T, port int) *rsyslogtest.Server {
	t.Helper()
	return rsyslogtest.Start(t, rsyslogtest.Options{Inputs: []rsyslogtest.Input{{Name: "plain", Transport: rsyslogtest.TCP, Port: port}}})
}

// runDomainm runs the domainm binary and returns its stdout, stderr and exit code.
func runDomainm(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(domainmBinary(t), args...)
	var out, errb bytes.Buffer // Run waits for the copies: no locking needed
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// TestAlertTest runs domainm alert test against a running daemon with four sinks: the
// file sink and a real rsyslogd deliver, a syslog sink whose receiver is down fails
// (exit 1, its error named), one whose min_severity is above the test alert's level
// is skipped. Once the second receiver runs, --severity critical reaches every sink
// (exit 0). A supervisor that cannot be reached is exit 2.
func TestAlertTest(t *testing.T) {
	siemPort, downPort := freePort(t), freePort(t)
	siem := startPlainRsyslog(t, siemPort)
	s := newSetup(t, "", fmt.Sprintf(`
[[alerts.sink]]
name = "siem"
type = "syslog"
transport = "tcp"
address = "127.0.0.1:%d"
confirm = "200ms"

[[alerts.sink]]
name = "down"
type = "syslog"
transport = "tcp"
address = "127.0.0.1:%d"
confirm = "200ms"
backoff_min = "100ms"
backoff_max = "200ms"

[[alerts.sink]]
name = "pager"
type = "syslog"
transport = "tcp"
address = "127.0.0.1:%d"
confirm = "200ms"
min_severity = "critical"
`, siemPort, downPort, siemPort))
	n := listenNotify(t, s.dir)
	startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })

	out, errOut, code := runDomainm(t, "alert", "test", "--socket", s.sock, "--timeout", "5s")
	t.Logf("domainm alert test (exit %d):\n%s%s", code, out, errOut)
	if code != ExitFindings {
		t.Errorf("exit %d with a sink down, want %d", code, ExitFindings)
	}
	for _, re := range []string{
		`(?m)^local +file +delivered in [0-9.]+m?s$`,
		`(?m)^siem +syslog +delivered in [0-9.]+m?s$`,
		`(?m)^down +syslog +FAILED after [0-9.]+m?s: .*connection refused`,
		`(?m)^pager +syslog +skipped: below the sink's min_severity critical$`,
		`(?m)^test alert event.id [0-9a-f]+$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s", re)
		}
	}
	id := regexp.MustCompile(`event.id ([0-9a-f]+)`).FindStringSubmatch(out)
	if id == nil {
		t.Fatal("no event id")
	}
	// The receivers have it: rsyslogd (MSGID alert-test, the id in the SD element) and
	// the file sink.
	if txt := strings.Join(siem.Lines("plain"), "\n"); !strings.Contains(txt, `alert-test [domainm@32473 id="`+id[1]+`"`) {
		t.Errorf("rsyslogd did not receive the test alert %s:\n%s", id[1], txt)
	}
	if a := s.alertsWith(t, "alert-test", ""); len(a) != 1 || !strings.Contains(a[0].Message, "requested by") {
		t.Errorf("file sink: test alerts %+v, want one saying who requested it", a)
	}

	// The second receiver comes up: every sink delivers a critical test alert.
	startPlainRsyslog(t, downPort)
	out, errOut, code = runDomainm(t, "alert", "test", "--socket", s.sock, "--severity", "critical", "--timeout", "20s", "--json")
	var res []proto.SinkTest
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != ExitClean || len(res) != 4 {
		t.Errorf("alert test --severity critical --json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	for _, r := range res {
		if !r.Delivered || r.Error != "" || r.Skipped != "" || r.EventID != res[0].EventID {
			t.Errorf("sink %s: %+v, want delivered, the same event id as %s", r.Sink, r, res[0].Sink)
		}
	}
	// The event's id under the alert schema's name, event.id.
	if strings.Contains(out, "event_id") || len(regexp.MustCompile(`"event": \{\s+"id": "[0-9a-f]+"\s+\}`).FindAllString(out, -1)) != 4 {
		t.Errorf("alert test --json: want each sink's event.id as \"event\": {\"id\": ...}:\n%s", out)
	}

	if _, errOut, code := runDomainm(t, "alert", "test", "--socket", filepath.Join(s.dir, "nothing.sock")); code != ExitError || !strings.Contains(errOut, "control socket") {
		t.Errorf("no supervisor: exit %d, %q; want %d naming the control socket", code, errOut, ExitError)
	}
	if _, errOut, code := runDomainm(t, "alert", "test", "--severity", "loud", "--socket", s.sock); code != ExitError || !strings.Contains(errOut, "--severity") {
		t.Errorf("bad --severity: exit %d, %q", code, errOut)
	}
}
