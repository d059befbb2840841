package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/domainm/domainm/image/qemu/qmp"
)

// Process is a running QEMU (or a command that execs it, such as ip netns exec).
type Process struct {
	Argv []string // program and arguments
	Pid  int

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	once    sync.Once
	killErr error
}

// Start starts argv (program first) with stdout and stderr (nil: discarded) in its own
// process group, so that a signal to the caller's terminal does not reach QEMU before
// the caller has decided what to do with it and Kill reaches anything it spawned; on
// Linux the kernel also kills it when its parent goes (Pdeathsig), so a test binary or
// coordinator that dies takes its QEMUs with it.
func Start(argv []string, stdout, stderr io.Writer) (*Process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %v: %w", argv, err)
	}
	p := &Process{Argv: argv, Pid: cmd.Process.Pid, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the process's exit status once Exited is closed (nil before).
func (p *Process) Err() error {
	select {
	case <-p.exited:
		return p.waitErr
	default:
		return nil
	}
}

// killWait bounds the wait for a process killed with SIGKILL.
const killWait = 10 * time.Second

// Kill kills the process group (SIGKILL) unless the process has exited, and waits for
// the process to exit, at most 10 s. It is idempotent: later calls return the first
// call's result.
func (p *Process) Kill() error {
	p.once.Do(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = killGroup(p.cmd.Process)
		select {
		case <-p.exited:
		case <-time.After(killWait):
			p.killErr = fmt.Errorf("QEMU pid %d did not exit after SIGKILL", p.Pid)
		}
	})
	return p.killErr
}

// ErrExited is returned by DialQMP when QEMU exits before its monitor answers.
var ErrExited = errors.New("qemu exited before its monitor came up")

// dialAttempt bounds one dial and greeting: a monitor socket serves one client at a
// time, and a client the kernel accepted while another is connected is never greeted.
const dialAttempt = 2 * time.Second

// DialQMP connects to the QMP socket at path of this process and leaves
// capabilities-negotiation mode. The socket file appears at bind, before QEMU listens,
// and QEMU greets only once its main loop runs, so a failed attempt is retried until
// ctx ends or the process exits (ErrExited).
func (p *Process) DialQMP(ctx context.Context, path string) (*qmp.Monitor, error) {
	for {
		var err error
		if _, err = os.Stat(path); err == nil {
			actx, cancel := context.WithTimeout(ctx, dialAttempt)
			var mon *qmp.Monitor
			mon, err = qmp.Dial(actx, path)
			cancel()
			if err == nil {
				return mon, nil
			}
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("%w (%v)", ErrExited, p.waitErr)
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for QMP socket %s: %w (last error: %v)", path, ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Launch starts Binary with c's arguments (stdout and stderr as for Start) and connects
// to its monitor at c.QMP; on failure the process is killed. The caller kills the
// process and closes the monitor.
func Launch(ctx context.Context, c Config, stdout, stderr io.Writer) (*Process, *qmp.Monitor, error) {
	p, err := Start(append([]string{Binary}, c.Args()...), stdout, stderr)
	if err != nil {
		return nil, nil, err
	}
	mon, err := p.DialQMP(ctx, c.QMP)
	if err != nil {
		p.Kill()
		return nil, nil, err
	}
	return p, mon, nil
}
