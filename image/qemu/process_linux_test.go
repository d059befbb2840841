package qemu

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestProcess starts a firmware-only VM, talks to it over QMP, and kills it: the
// process is gone afterwards and a second Kill is harmless.
func TestProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts QEMU")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	accel, err := FirmwareAccel(ctx, t.TempDir())
	if err != nil || (accel != "kvm" && accel != "tcg") {
		t.Fatalf("FirmwareAccel = %q, %v", accel, err)
	}
	t.Logf("accelerator for firmware-only guests: %s", accel)
	c := Config{Accel: accel, MemMiB: 16, QMP: filepath.Join(t.TempDir(), "qmp.sock"), Paused: true}
	p, mon, err := Launch(ctx, c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	defer mon.Close()
	if st, err := mon.QueryStatus(ctx); err != nil || st.Status != "prelaunch" {
		t.Fatalf("status %+v, %v; want prelaunch (-S)", st, err)
	}
	if accel == "kvm" {
		if err := CheckKVM(ctx, mon, p.Exited(), true); err != nil {
			t.Errorf("CheckKVM after FirmwareAccel chose kvm: %v", err)
		}
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Kill")
	}
	if err := syscall.Kill(p.Pid, 0); err == nil {
		t.Fatalf("QEMU pid %d still alive after Kill", p.Pid)
	}
	if p.Err() == nil {
		t.Error("a killed QEMU reports a nil exit status")
	}
	if err := p.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
}

// A QEMU that exits at startup (an unknown machine type) ends DialQMP with ErrExited,
// not a timeout.
func TestDialQMPExited(t *testing.T) {
	c := Config{Machine: "no-such-machine", Accel: "tcg", MemMiB: 16, QMP: filepath.Join(t.TempDir(), "qmp.sock")}
	p, err := Start(append([]string{Binary}, c.Args()...), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := p.DialQMP(ctx, c.QMP); !errors.Is(err, ErrExited) {
		t.Fatalf("DialQMP = %v, want ErrExited", err)
	}
}
