package memscan

import (
	"errors"
	"reflect"
	"testing"

	"github.com/domainm/domainm/memscan/internal/privcmd"
)

func TestXenNotAvailable(t *testing.T) {
	_, err := Open("xen:1", OpenOptions{XenMemory: 64 << 20})
	if !errors.Is(err, privcmd.ErrNoXen) {
		t.Fatalf("Open(xen:1) = %v, want the no-privcmd error", err)
	}
	t.Logf("error text: %v", err)
}

func TestXenRanges(t *testing.T) {
	errs := []int32{0, 0, -22, -22, 0, -2, 0, 0, 0}
	want := []Range{{0, 2 * xenPage}, {4 * xenPage, xenPage}, {6 * xenPage, 3 * xenPage}}
	if got := xenRanges(errs); !reflect.DeepEqual(got, want) {
		t.Fatalf("xenRanges = %v, want %v", got, want)
	}
	if got := xenRanges([]int32{-1, -1}); got != nil {
		t.Fatalf("all holes: %v", got)
	}
}

func TestXenFrames(t *testing.T) {
	for _, tc := range []struct{ mem, frames uint64 }{
		{64 << 20, 16384}, {2 << 30, 524288}, {4 << 30, (6 << 30) / xenPage}, {4097, 2},
	} {
		if got := xenFrames(tc.mem); got != tc.frames {
			t.Errorf("xenFrames(%#x) = %d, want %d", tc.mem, got, tc.frames)
		}
	}
}
