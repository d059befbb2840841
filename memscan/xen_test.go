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
	// Without the highest frame (what the supervisor passes for xen:DOMID from its
	// config) Open goes on to probe Xen: here it fails only for the missing device.
	if _, err := Open("xen:1", OpenOptions{}); !errors.Is(err, privcmd.ErrNoXen) {
		t.Fatalf("Open(xen:1) without XenMaxGPFN = %v, want the no-privcmd error", err)
	}
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

// fakeP2M answers xenProbe like Xen for a domain whose populated frames are runs.
func fakeP2M(t *testing.T, runs []privcmd.Run, calls *[][2]uint64) func(uint16, uint64, uint64) ([]int32, error) {
	return func(domid uint16, start, count uint64) ([]int32, error) {
		if domid != 7 {
			t.Errorf("probe of domain %d, want 7", domid)
		}
		*calls = append(*calls, [2]uint64{start, count})
		errs := make([]int32, count)
		for i := range errs {
			errs[i] = -22
			f := start + uint64(i)
			for _, r := range runs {
				if f >= r.First && f < r.First+r.Count {
					errs[i] = 0
				}
			}
		}
		return errs, nil
	}
}

// TestProbeXen: without the highest frame, the frames Xen maps are found by asking for
// the low 4 GiB and then 1 GiB windows until one is empty: a PVH guest's RAM and special
// pages under 4 GiB, and an HVM-like guest's RAM continued above 4 GiB.
func TestProbeXen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		runs  []privcmd.Run
		calls int
	}{
		{"pvh-128M", []privcmd.Run{{First: 0, Count: 0x8000}, {First: 0xfeff0, Count: 8}}, 2},
		{"ram-above-4G", []privcmd.Run{{First: 0, Count: 0xc0000}, {First: 0xfeff0, Count: 8}, {First: 0x100000, Count: 0x50000}}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls [][2]uint64
			defer func(p func(uint16, uint64, uint64) ([]int32, error)) { xenProbe = p }(xenProbe)
			xenProbe = fakeP2M(t, tc.runs, &calls)
			errs, err := probeXen(7)
			if err != nil {
				t.Fatal(err)
			}
			last := tc.runs[len(tc.runs)-1]
			if want := last.First + last.Count; uint64(len(errs)) != want {
				t.Errorf("span %#x frames, want %#x (highest mapped frame + 1)", len(errs), want)
			}
			var want []Range
			for _, r := range tc.runs {
				want = append(want, Range{GPA: r.First * xenPage, Size: r.Count * xenPage})
			}
			if got := xenRanges(errs); !reflect.DeepEqual(got, want) {
				t.Errorf("ranges %v, want %v", got, want)
			}
			if len(calls) != tc.calls || calls[0] != [2]uint64{0, xenProbeLow} {
				t.Errorf("probes %v: want %d, the first of the low 4 GiB", calls, tc.calls)
			}
		})
	}
}

func TestParseXenFrames(t *testing.T) {
	got, err := ParseXenFrames("0x0+0x8000 0xfeff0+0x10")
	want := []Range{{0, 0x8000 * xenPage}, {0xfeff0 * xenPage, 0x10 * xenPage}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseXenFrames = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"", "0x10", "0x10+0", "0x10+x", "0x20+1 0x10+1", "0x0+0x10 0x8+1", "0x7ffffffff+2"} {
		if rs, err := ParseXenFrames(bad); err == nil {
			t.Errorf("ParseXenFrames(%q) = %v, want an error", bad, rs)
		}
	}
}

func TestOpenXenFramesNotAvailable(t *testing.T) {
	if _, err := OpenXenFrames(1, []Range{{0, xenPage}}); !errors.Is(err, privcmd.ErrNoXen) {
		t.Fatalf("OpenXenFrames = %v, want the no-privcmd error", err)
	}
}

func TestXenErrnos(t *testing.T) {
	errs := []int32{0, -1, -1, -22, 0, -1}
	if got := xenErrnos(errs, []Range{{0, 4 * xenPage}, {5 * xenPage, xenPage}}); got != "0:1 1:3 22:1" {
		t.Fatalf("xenErrnos = %q", got)
	}
}

func TestRefusedErrs(t *testing.T) {
	errs := []int32{0, 0, -22, -22, 0, -1, 0, -22}
	got := xenRanges(refusedErrs(errs, []Range{{0, 6 * xenPage}}))
	want := []Range{{2 * xenPage, 2 * xenPage}, {5 * xenPage, xenPage}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("refused ranges %v, want %v (frame 7 is outside the map state)", got, want)
	}
}
