package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/image/qemu"
)

// Rsyslog is a real rsyslogd receiving syslog over TLS (RFC 5425, the lab's CA) on
// 127.0.0.1:Port and writing each message's MSG, one per line, to Out.
type Rsyslog struct {
	Dir, Out string
	Port     int
	proc     *qemu.Process // a process-group runner (image/qemu's, not QEMU-specific)
}

// StartRsyslog writes the config, checks it with rsyslogd -N1 and starts the daemon
// in the foreground; Stop kills it by its process group.
func StartRsyslog(ctx context.Context, dir string, pki PKI) (*Rsyslog, error) {
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		return nil, fmt.Errorf("rsyslogd not found (install rsyslog and rsyslog-gnutls): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &Rsyslog{Dir: dir, Out: filepath.Join(dir, "alerts.log"), Port: port}
	if err := os.MkdirAll(filepath.Join(dir, "work"), 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "rsyslog.conf")
	text := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="256k"
  defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q)
main_queue(queue.type="Direct")
module(load="imtcp" maxSessions="20" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="raw" type="string" string="%%msg%%\n")
ruleset(name="tls") { action(type="omfile" file=%q template="raw") }
input(type="imtcp" address="127.0.0.1" port="%d" ruleset="tls")
`, filepath.Join(dir, "work"), pki.CA, pki.ServerCert, pki.ServerKey, r.Out, port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, err
	}
	if out, err := exec.Command("rsyslogd", "-N1", "-f", conf).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("rsyslogd -N1 -f %s: %w: %s", conf, err, out)
	}
	log, err := os.Create(filepath.Join(dir, "rsyslogd.out"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	if r.proc, err = qemu.Start([]string{"rsyslogd", "-n", "-f", conf, "-i", filepath.Join(dir, "rsyslogd.pid")}, log, log); err != nil {
		return nil, err
	}
	if err := waitListen(ctx, "127.0.0.1:"+strconv.Itoa(port), r.proc); err != nil {
		r.Stop()
		return nil, fmt.Errorf("rsyslogd: %w", err)
	}
	return r, nil
}

// Stop kills rsyslogd's process group.
func (r *Rsyslog) Stop() error { return r.proc.Kill() }

// Pid is rsyslogd's process id.
func (r *Rsyslog) Pid() int { return r.proc.Pid }

// Received returns the alerts rsyslogd wrote so far (MSG is the alert's JSON).
func (r *Rsyslog) Received() []Alert {
	f, err := os.Open(r.Out)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []Alert
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "\ufeff")
		var a Alert
		if json.Unmarshal([]byte(line), &a) == nil {
			a.Raw = line
			out = append(out, a)
		}
	}
	return out
}

func waitListen(ctx context.Context, addr string, p *qemu.Process) error {
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not listening on %s: %w", addr, ctx.Err())
		case <-p.Exited():
			return fmt.Errorf("exited before listening on %s: %v", addr, p.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
