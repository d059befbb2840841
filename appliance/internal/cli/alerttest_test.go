package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
)

// plainRsyslog is a real rsyslogd with one plain TCP input on 127.0.0.1:port that
// writes each message's raw text, one per line, to out.
type plainRsyslog struct {
	port int
	out  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startPlainRsyslog(t *testing.T, port int) *plainRsyslog {
	t.Helper()
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		t.Fatalf("rsyslogd is needed (make deps installs rsyslog): %v", err)
	}
	dir := t.TempDir()
	r := &plainRsyslog{port: port, out: filepath.Join(dir, "out.log"), done: make(chan struct{})}
	conf := filepath.Join(dir, "rsyslog.conf")
	os.Mkdir(filepath.Join(dir, "work"), 0o700)
	text := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k")
main_queue(queue.type="Direct")
module(load="imtcp")
template(name="raw" type="string" string="%%rawmsg%%\n")
ruleset(name="plain") { action(type="omfile" file=%q template="raw") }
input(type="imtcp" address="127.0.0.1" port="%d" ruleset="plain")
`, filepath.Join(dir, "work"), r.out, port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command("rsyslogd", "-n", "-f", conf, "-i", filepath.Join(dir, "pid"))
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.done
		}
	})
	waitUntil(t, "rsyslogd listening", 30*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return r
}

func (r *plainRsyslog) text() string {
	b, _ := os.ReadFile(r.out)
	return string(b)
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
	if txt := siem.text(); !strings.Contains(txt, `alert-test [domainm@32473 id="`+id[1]+`"`) {
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
		if !r.Delivered || r.Error != "" || r.Skipped != "" {
			t.Errorf("sink %s: %+v, want delivered", r.Sink, r)
		}
	}

	if _, errOut, code := runDomainm(t, "alert", "test", "--socket", filepath.Join(s.dir, "nothing.sock")); code != ExitError || !strings.Contains(errOut, "control socket") {
		t.Errorf("no supervisor: exit %d, %q; want %d naming the control socket", code, errOut, ExitError)
	}
	if _, errOut, code := runDomainm(t, "alert", "test", "--severity", "loud", "--socket", s.sock); code != ExitError || !strings.Contains(errOut, "--severity") {
		t.Errorf("bad --severity: exit %d, %q", code, errOut)
	}
}
