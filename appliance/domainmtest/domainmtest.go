// Package domainmtest runs the real domainm daemon for tests, as net/http/httptest runs
// a real server: the binary built once per test process from appliance/cmd/domainm (the
// binary the systemd unit starts), `domainm run` started in a process group of its own
// and killed with it when the test ends, its output kept and shown when the test
// failed, and a wait for its control socket.
//
// It is public because the migration coordinator's tests (migrate-hooks) drive the real
// supervisor as well as the appliance's own; the config file is the caller's.
package domainmtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/image/testenv"
)

// Package is the import path of the daemon's main package.
const Package = "github.com/domainm/domainm/appliance/cmd/domainm"

// Binary returns the path of domainm, built once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	return testenv.GoBuild(t, Package)
}

// Options are how Start runs the daemon besides its config.
type Options struct {
	Notify   string        // NOTIFY_SOCKET, the socket standing in for systemd's; "" for none
	Watchdog time.Duration // WATCHDOG_USEC, as systemd's WatchdogSec sets it; 0 for none
	Args     []string      // after "run --config FILE", e.g. "--log-level", "debug"
}

// Daemon is a running `domainm run`.
type Daemon struct {
	cmd  *exec.Cmd
	out  testenv.Buffer // stdout and stderr
	done chan struct{}
	err  error
}

// Start starts `domainm run --config config` with opt. It runs under a shell that sets
// WATCHDOG_PID to its own pid before exec'ing domainm, as systemd sets it, so the pid
// is domainm's. The test's cleanup kills the process group (waking it first, in case
// the test stopped it) and logs the output when the test failed.
func Start(t testing.TB, config string, opt Options) *Daemon {
	t.Helper()
	bin := Binary(t)
	args := append([]string{"-c", `WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" run --config "$@"`, bin, config}, opt.Args...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = os.Environ()
	if opt.Notify != "" {
		cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+opt.Notify)
	}
	if opt.Watchdog > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("WATCHDOG_USEC=%d", opt.Watchdog.Microseconds()))
	}
	// Its own process group, so that one signal ends whatever it started; killed when
	// the test process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	d := &Daemon{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &d.out, &d.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting domainm: %v", err)
	}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			pid := cmd.Process.Pid
			syscall.Kill(pid, syscall.SIGCONT)
			syscall.Kill(-pid, syscall.SIGKILL)
			<-d.done
		}
		if t.Failed() {
			t.Logf("domainm output:\n%s", d.out.String())
		}
	})
	return d
}

// Pid is the daemon's process id (and its process group's).
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig os.Signal) error { return d.cmd.Process.Signal(sig) }

// Done is closed when the daemon has exited.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is how the daemon exited (exec.Cmd.Wait's error), once Done is closed.
func (d *Daemon) Err() error { return d.err }

// ExitCode is the daemon's exit status once Done is closed, -1 if a signal ended it.
func (d *Daemon) ExitCode() int { return d.cmd.ProcessState.ExitCode() }

// Output is what the daemon wrote so far, stdout and stderr.
func (d *Daemon) Output() string { return d.out.String() }

// Stop sends SIGTERM and returns how long the daemon took to exit and its exit code;
// it fails the test when the daemon takes longer than bound.
func (d *Daemon) Stop(t testing.TB, bound time.Duration) (time.Duration, int) {
	t.Helper()
	start := time.Now()
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(bound):
		t.Fatalf("domainm did not stop within %v of SIGTERM", bound)
	}
	return time.Since(start), d.ExitCode()
}

// WaitSocket waits until the control socket at path accepts a connection, failing the
// test after timeout or when the daemon exits first.
func (d *Daemon) WaitSocket(t testing.TB, path string, timeout time.Duration) {
	t.Helper()
	testenv.WaitFor(t, timeout, "the control socket "+path, func() bool {
		select {
		case <-d.done:
			t.Fatalf("domainm exited before it listened on %s: %v", path, d.err)
		default:
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}
