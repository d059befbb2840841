//go:build linux

package privcmd

import (
	"errors"
	"os"
	"testing"
	"unsafe"
)

// TestABI pins the hand-written struct against Linux's struct privcmd_mmapbatch_v2
// on amd64 and the ioctl number libxenforeignmemory uses.
func TestABI(t *testing.T) {
	if got := unsafe.Sizeof(mmapBatchV2{}); got != 32 {
		t.Fatalf("sizeof(privcmd_mmapbatch_v2) = %d, want 32", got)
	}
	if got := unsafe.Offsetof(mmapBatchV2{}.Addr); got != 8 {
		t.Fatalf("offsetof(addr) = %d, want 8", got)
	}
	if got := unsafe.Offsetof(mmapBatchV2{}.Err); got != 24 {
		t.Fatalf("offsetof(err) = %d, want 24", got)
	}
	if ioctlMmapBatchV2 != 0x00205004 {
		t.Fatalf("IOCTL_PRIVCMD_MMAPBATCH_V2 = %#x, want 0x205004", ioctlMmapBatchV2)
	}
}

// TestNotXen: this machine is not a Xen domain; opening must say so clearly.
func TestNotXen(t *testing.T) {
	if _, err := os.Stat(DevicePath); err == nil {
		t.Fatalf("%s exists: this test expects a non-Xen host", DevicePath)
	}
	if err := Available(); !errors.Is(err, ErrNoXen) {
		t.Fatalf("Available() = %v, want ErrNoXen", err)
	}
	if _, err := MapForeign(1, 16); !errors.Is(err, ErrNoXen) {
		t.Fatalf("MapForeign = %v, want ErrNoXen", err)
	}
}

// TestMapRunsArgs: runs outside the span are refused before the device is touched.
func TestMapRunsArgs(t *testing.T) {
	for _, tc := range []struct {
		span uint64
		runs []Run
	}{
		{0, nil},
		{16, []Run{{First: 16, Count: 1}}},
		{16, []Run{{First: 10, Count: 7}}},
		{16, []Run{{First: 2, Count: 0}}},
		{1 << 40, nil},
	} {
		if _, err := MapRuns(1, tc.span, tc.runs); err == nil || errors.Is(err, ErrNoXen) {
			t.Errorf("MapRuns(span %d, %v) = %v, want an argument error", tc.span, tc.runs, err)
		}
	}
	if _, err := MapRuns(1, 16, []Run{{First: 0, Count: 16}}); !errors.Is(err, ErrNoXen) {
		t.Fatalf("valid MapRuns on a non-Xen host = %v, want ErrNoXen", err)
	}
	if _, err := Probe(1, 0); err == nil || errors.Is(err, ErrNoXen) {
		t.Fatalf("Probe(span 0) = %v", err)
	}
	if _, err := Probe(1, 16); !errors.Is(err, ErrNoXen) {
		t.Fatalf("Probe on a non-Xen host = %v, want ErrNoXen", err)
	}
}
