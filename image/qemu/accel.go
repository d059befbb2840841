package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/domainm/domainm/image/qemu/qmp"
)

// Accelerator choice. On this project's lab machines /dev/kvm is a nested, paravirtual
// KVM on which a firmware-only guest runs but a Linux kernel hangs early in boot
// (DESIGN.md, "Test lab"), so callers detect, rather than assume, what a guest can use:
// KVMUsable says whether /dev/kvm opens at all, CheckKVM whether a started VM really
// runs under KVM, FirmwareAccel what a firmware-only guest can use.

// KVMUsable reports whether /dev/kvm opens for reading and writing.
func KVMUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// kvmSettle is how long a guest must keep running under KVM to count as working.
const kvmSettle = 300 * time.Millisecond

// CheckKVM checks that the VM behind mon uses KVM (query-kvm) and, unless paused (a VM
// started with -S), that its guest is still running 300 ms later; exited is the
// process's (Process.Exited).
func CheckKVM(ctx context.Context, mon *qmp.Monitor, exited <-chan struct{}, paused bool) error {
	var st struct{ Enabled, Present bool }
	if err := mon.Execute(ctx, "query-kvm", nil, &st); err != nil {
		return err
	}
	if !st.Enabled || !st.Present {
		return fmt.Errorf("query-kvm: enabled=%v present=%v", st.Enabled, st.Present)
	}
	select {
	case <-exited:
		return fmt.Errorf("QEMU exited under KVM")
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(kvmSettle):
	}
	if paused {
		return nil
	}
	s, err := mon.QueryStatus(ctx)
	if err != nil {
		return err
	}
	if !s.Running {
		return fmt.Errorf("guest status under KVM is %q, not running", s.Status)
	}
	return nil
}

// FirmwareAccel reports which accelerator a firmware-only guest can use here: "kvm" when
// /dev/kvm opens and a 16 MiB probe VM keeps running under it, "tcg" otherwise. The
// probe's QMP socket goes in dir. The error is for a probe that could not be carried
// out (ctx ended, the monitor failed), not for KVM that does not work.
func FirmwareAccel(ctx context.Context, dir string) (string, error) {
	if !KVMUsable() {
		return "tcg", nil
	}
	sock := filepath.Join(dir, fmt.Sprintf("kvm-probe-%d.qmp", os.Getpid()))
	os.Remove(sock)
	defer os.Remove(sock)
	c := Config{Name: "kvm-probe", Accel: "kvm", MemMiB: 16, QMP: sock}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	p, mon, err := Launch(dctx, c, nil, nil)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "tcg", nil
	}
	defer p.Kill()
	defer mon.Close()
	var kvm struct{ Enabled bool }
	if err := mon.Execute(ctx, "query-kvm", nil, &kvm); err != nil {
		return "", fmt.Errorf("probing kvm: %w", err)
	}
	if err := CheckKVM(ctx, mon, p.Exited(), false); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "tcg", nil
	}
	return "kvm", nil
}
