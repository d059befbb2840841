package memscan

import (
	"errors"
	"reflect"
	"testing"

	"github.com/domainm/domainm/memscan/internal/privcmd"
)

func TestXenNotAvailable(t *testing.T) {
	_, err := Open("xen:1", OpenOptions{XenMaxGPFN: 64 << 8})
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

func TestXenRuns(t *testing.T) {
	rs := []Range{{0, 2 * xenPage}, {4 * xenPage, xenPage}, {0xfeff0 * xenPage, 3 * xenPage}}
	runs := xenRuns(rs)
	want := []privcmd.Run{{First: 0, Count: 2}, {First: 4, Count: 1}, {First: 0xfeff0, Count: 3}}
	if !reflect.DeepEqual(runs, want) {
		t.Fatalf("xenRuns = %v, want %v", runs, want)
	}
}
