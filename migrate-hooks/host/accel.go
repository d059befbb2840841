package host

import (
	"context"
	"fmt"
	"os"
	"time"
)

// FirmwareAccel reports which accelerator a firmware-only guest can use here: "kvm" when
// /dev/kvm opens and a probe VM keeps running under it, "tcg" otherwise. (On nested,
// paravirtual KVM a firmware-only guest may run where a Linux kernel does not.)
func FirmwareAccel(ctx context.Context, dir string) (string, error) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg", nil
	}
	f.Close()
	h := &Local{Name: "probe", Dir: dir, Prefix: fmt.Sprintf("domainm-probe-%d-", os.Getpid())}
	defer h.Close()
	vm, err := h.Start(ctx, Machine{Name: "kvm", MemMiB: 16, Accel: "kvm"}, "")
	if err != nil {
		return "tcg", nil
	}
	var kvm struct{ Enabled, Present bool }
	if err := vm.Mon.Execute(ctx, "query-kvm", nil, &kvm); err != nil {
		return "", fmt.Errorf("probing kvm: %w", err)
	}
	select {
	case <-time.After(300 * time.Millisecond):
	case <-ctx.Done():
		return "", ctx.Err()
	}
	st, err := vm.Mon.QueryStatus(ctx)
	if err != nil || !kvm.Enabled || !st.Running {
		return "tcg", nil
	}
	return "kvm", nil
}
