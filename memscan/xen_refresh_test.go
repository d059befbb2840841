package memscan

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// TestXenRefreshFollowsTarget: between migrations the target gives frames back and
// populates others; Refresh maps what Xen maps now, among the map state and the
// candidates, and says what changed (the blind spot of a map state fixed at open: a
// frame populated later was never scanned, one given back stayed mapped to its old
// page).
func TestXenRefreshFollowsTarget(t *testing.T) {
	list := "0x0+0x100 0x1f8+0x8"
	p2m := map[uint16]fakeDomain{7: {frames: frames(list), seed: 3}}
	closed := useFakeP2M(t, p2m)
	// OpenXenFrames without its check for /dev/xen/privcmd (nil: the privcmd seam)
	x, err := OpenXenFramesWith(nil, 7, frames(list))
	if err != nil {
		t.Fatal(err)
	}
	c, err := x.Refresh(nil)
	if err != nil || c.Changed() || c.Before != 0x108 || c.After != 0x108 || c.Refused != 0 || *closed != 1 {
		t.Fatalf("refresh of an unchanged target: %v, %v, %d mappings closed; want no change, the old mapping closed", c, err, *closed)
	}

	// The guest gives back 0x10..0x13 and populates 0x120 (in a hole) and 0x300..0x303
	// (above everything it had); frame 0x20 it gave back and populated again, so
	// another page backs it.
	page := func() []byte {
		b := make([]byte, xenPage)
		if _, err := x.ReadAt(b, 0x20*xenPage); err != nil {
			t.Fatal(err)
		}
		return b
	}
	before20 := page()
	p2m[7] = fakeDomain{frames: frames("0x0+0x10 0x14+0xec 0x120+0x1 0x1f8+0x8 0x300+0x4"), seed: 3, dirty: map[uint64]bool{0x20: true}}
	if !bytes.Equal(page(), before20) {
		t.Fatal("the fake's old mapping should keep the old page")
	}
	// dom0's list as read at grant (stale) and a sweep window over 0x100..0x3ff
	c, err = x.Refresh([]Range{{GPA: 0, Size: 0x100 * xenPage}, {GPA: 0x100 * xenPage, Size: 0x300 * xenPage}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the guest's changes: %v", c)
	if want := frames("0x10+0x4"); !reflect.DeepEqual(c.Lost, want) {
		t.Errorf("lost %v, want %v", c.Lost, want)
	}
	if want := frames("0x120+0x1 0x300+0x4"); !reflect.DeepEqual(c.Gained, want) {
		t.Errorf("gained %v, want %v", c.Gained, want)
	}
	if !c.Changed() || c.After != 0x108-4+5 || c.Refused != 0x400-c.After {
		t.Errorf("change %+v: want 0x109 frames after, the rest of the 0x400 asked for refused", c)
	}
	if _, err := x.ReadAt(make([]byte, 8), 0x10*xenPage); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("read of a frame given back: %v, want ErrOutOfRange", err)
	}
	if _, err := x.ReadAt(make([]byte, 8), 0x301*xenPage); err != nil {
		t.Errorf("read of a frame populated after open: %v", err)
	}
	if bytes.Equal(page(), before20) {
		t.Error("frame 0x20, populated again, still reads the page it had before the refresh")
	}

	// Nothing changes: no change reported however often the refused frames (the
	// sweep's holes, 0x500..0x50f of a stale list) are asked for again.
	for i := range 3 {
		c, err = x.Refresh([]Range{{GPA: 0x500 * xenPage, Size: 0x10 * xenPage}})
		if err != nil || c.Changed() || c.Refused != 0x10 || x.Refused() != 0x10 {
			t.Fatalf("refresh %d of an unchanged target with refused candidates: %v, %v", i, c, err)
		}
	}

	// A domain being destroyed (a migration's end) has most frames refused: a caller
	// that finds it gone declines the change, and the map state and its pages stay as
	// they were (a prepare still fingerprints them).
	ranges := x.Ranges()
	p2m[7] = fakeDomain{frames: frames("0x0+0x8"), seed: 3}
	var offered XenFrameChange
	c, kept, err := x.RefreshIf(nil, func(c XenFrameChange) bool { offered = c; return false })
	if err != nil || kept || c.After != 8 || !reflect.DeepEqual(offered, c) || !reflect.DeepEqual(x.Ranges(), ranges) {
		t.Fatalf("declined refresh: %v kept %v err %v, ranges %v; want the change offered, nothing swapped in", c, kept, err, x.Ranges())
	}
	if _, err := x.ReadAt(make([]byte, 8), 0x301*xenPage); err != nil {
		t.Errorf("after a declined refresh, a frame of the old map state: %v", err)
	}

	// The domain gone: an error, and the mapping and map state are kept (the liveness
	// check releases them).
	delete(p2m, 7)
	if _, err := x.Refresh(nil); err == nil {
		t.Error("refresh of a gone domain succeeded")
	}
	if !x.Mapped() || !reflect.DeepEqual(x.Ranges(), ranges) {
		t.Error("a failed refresh changed the mapping")
	}
	x.Unmap()
	if _, err := x.Refresh(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("refresh while unmapped: %v, want ErrClosed", err)
	}
	if _, err := x.Refresh([]Range{{GPA: 1, Size: xenPage}}); err == nil {
		t.Error("a candidate that is not whole frames was taken")
	}
}

func TestRangesUnion(t *testing.T) {
	got, err := rangesUnion(frames("0x0+0x10 0x20+0x10"), frames("0x40+0x1")[:1])
	if err != nil {
		t.Fatal(err)
	}
	got2, err := rangesUnion(got, []Range{{GPA: 0x8 * xenPage, Size: 0x18 * xenPage}, {GPA: 0x30 * xenPage, Size: 0x4 * xenPage}, {}})
	if err != nil {
		t.Fatal(err)
	}
	if want := frames("0x0+0x34 0x40+0x1"); !reflect.DeepEqual(got2, want) {
		t.Fatalf("union %v, want %v", got2, want)
	}
}

func TestXenSweep(t *testing.T) {
	s := XenSweep{Window: 0x100, Limit: 0x300}
	var got []Range
	for range 4 {
		got = append(got, s.Next(frames("0x0+0x80")))
	}
	want := frames("0x0+0x100 0x100+0x100 0x200+0x100")
	want = append(want, want[0])
	if !reflect.DeepEqual(got, want) || s.Rounds() != 1 {
		t.Fatalf("windows %v (%d rounds), want %v and 1 round", got, s.Rounds(), want)
	}
	// A guest above the limit: the holes below its highest frame are swept too.
	s = XenSweep{Window: 0x100, Limit: 0x100}
	s.Next(nil)
	if r := s.Next(frames("0x0+0x80 0x1f0+0x8")); r != (Range{GPA: 0x100 * xenPage, Size: 0xf8 * xenPage}) {
		t.Fatalf("window %v, want frames 0x100..0x1f7", r)
	}
}

// BenchmarkXenRefresh: Domain M's own work in a refresh of a 4 GiB target (1 Mi frames
// in two runs, plus a sweep window), with the hypercalls of the mapping left to the
// fake: the bookkeeping over the frame span that Xen's mapping calls come on top of.
func BenchmarkXenRefresh(b *testing.B) {
	list := frames("0x0+0xc0000 0x100000+0x40000")
	p2m := map[uint16]fakeDomain{7: {frames: list, seed: 3}}
	useFakeP2M(b, p2m)
	x, err := OpenXenFramesWith(nil, 7, list)
	if err != nil {
		b.Fatal(err)
	}
	var s XenSweep
	b.ResetTimer()
	for range b.N {
		if _, err := x.Refresh(append(list[:2:2], s.Next(x.Ranges()))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(1<<20), "ns/frame")
}
