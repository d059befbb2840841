package qmp_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/domainm/domainm/image/qemu"
	"github.com/domainm/domainm/image/qemu/qmp"
)

type testVM struct{ Mon *qmp.Monitor }

// startVM starts a 16 MiB firmware-only VM (KVM where it works here, else TCG).
func startVM(t *testing.T) testVM {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	accel, err := qemu.FirmwareAccel(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := qemu.Config{Accel: accel, MemMiB: 16, QMP: filepath.Join(t.TempDir(), "qmp.sock")}
	p, mon, err := qemu.Launch(ctx, c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	t.Cleanup(func() { mon.Close() })
	return testVM{mon}
}

func TestErrorsKeepClass(t *testing.T) {
	vm := startVM(t)
	ctx := context.Background()
	err := vm.Mon.Execute(ctx, "no-such-command", nil, nil)
	var qe *qmp.Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Command != "no-such-command" {
		t.Fatalf("got %#v, want a *qmp.Error of class CommandNotFound", err)
	}
	err = vm.Mon.MigrateContinue(ctx, "pre-switchover")
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc == "" {
		t.Fatalf("migrate-continue with no migration: got %#v, want a GenericError", err)
	}
}

func TestEventsCarryQEMUTimestamps(t *testing.T) {
	vm := startVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := time.Now()
	if err := vm.Mon.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	ev, _, err := vm.Mon.WaitEvent(ctx, 0, func(e qmp.Event) bool { return e.Name == "STOP" })
	if err != nil {
		t.Fatal(err)
	}
	if d := ev.Time().Sub(before); d < -time.Second || d > 5*time.Second || ev.Micros < 0 || ev.Micros >= 1e6 {
		t.Errorf("STOP timestamp %v (%d s %d µs) is not QEMU's wall-clock time near %v", ev.Time(), ev.Seconds, ev.Micros, before)
	}
	st, err := vm.Mon.QueryStatus(ctx)
	if err != nil || st.Running || st.Status != "paused" {
		t.Errorf("after stop: %+v, %v", st, err)
	}
}

// A monitor whose peer stops answering: the call returns when its context ends, and
// Close unblocks everything after that.
func TestCallsAreBoundedByContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte(`{"QMP":{"version":{"qemu":{"major":7,"minor":2,"micro":0}},"capabilities":[]}}` + "\n"))
		buf := make([]byte, 4096)
		c.Read(buf) // qmp_capabilities
		c.Write([]byte(`{"return":{},"id":1}` + "\n"))
		for {
			if _, err := c.Read(buf); err != nil { // never answer again
				c.Close()
				return
			}
		}
	}()
	ctx := context.Background()
	m, err := qmp.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "7.2.0" {
		t.Errorf("version %q", m.Version)
	}
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = m.Execute(tctx, "query-status", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("hung call: got %v after %v, want deadline exceeded after ~100ms", err, time.Since(start))
	}
	m.Close()
	if err := m.Execute(ctx, "query-status", nil, nil); !errors.Is(err, qmp.ErrClosed) {
		t.Fatalf("after Close: got %v, want ErrClosed", err)
	}
}
