package memscan_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"github.com/domainm/domainm/memscan"
)

// TestCopiedFileEdgesFoundOnce: a RAM file that can shrink is copied window by window,
// each window hashed as it is copied (copyHash). Markers across every kind of block
// edge (straddling it, ending just before it, at a block's first byte, inside the
// overlap, across the overlap's end; the file's first and last bytes) are each reported exactly once, at their own
// address, with the screen off (a cheap rule set: window by window) and on
// (memscan.ScreenAlways: windows with a hit scanned alone, the others settled by the
// screen), in runs of 16 and of 1 window. A second pass finds every block unchanged
// (the hash made while copying is the one the in-place check computes); a change in an
// overlap rescans the two windows that hold it, and a marker moved there is found
// once at its new address, the old one gone.
func TestCopiedFileEdgesFoundOnce(t *testing.T) {
	const bs, ov, size = 64 << 10, 4 << 10, 4 << 20
	rng := rand.New(rand.NewPCG(11, 12))
	img := make([]byte, size)
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	var want []uint64
	n := 0
	plant := func(at int) {
		m := fmt.Sprintf("EDGE-MARK-%04d", n)
		n++
		copy(img[at:], m)
		want = append(want, uint64(at))
	}
	const ml = len("EDGE-MARK-0000")
	for k := 1; k < size/bs-16; k++ { // the last run of 16 blocks: one marker, at the end
		e := k * bs
		switch k % 6 {
		case 0: // straddling the edge, by 1 to ml-1 bytes
			plant(e - 1 - k%(ml-1))
		case 1: // ending just before the edge
			plant(e - ml)
		case 2: // at the block's first byte: also in the overlap of the window before
			plant(e)
		case 3: // inside the overlap
			plant(e + ov/2)
		case 4: // across the overlap's end: the window before sees only part of it
			plant(e + ov - 5)
		case 5: // two in one block: at its second byte and in its middle
			plant(e + 1)
			plant(e + bs/2)
		}
	}
	plant(0)
	plant(size - ml)
	sort.Slice(want, func(i, j int) bool { return want[i] < want[j] })
	path := filepath.Join(t.TempDir(), "ram")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := memscan.OpenFile(path, memscan.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.InPlace() {
		t.Fatal("a regular file is scanned in place")
	}
	rs := compile(t, `rule edge { strings: $a = /EDGE-MARK-[0-9]{4}/ condition: $a }
rule far { strings: $a = "EDGE-MARK-0000" $b = "EDGE-MARK-0006" condition: $a and $b }
rule near { strings: $a = "EDGE-MARK-0003" $b = "EDGE-MARK-0004" condition: $a and $b }`)
	opts := memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}
	for _, tc := range []struct {
		name   string
		screen bool
		batch  int
	}{{"window by window", false, 16}, {"screened", true, 16}, {"runs of 1", false, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			d := memscan.NewDriver(memscan.DriverConfig{BlockSize: bs, Overlap: ov, Workers: 2, Batch: tc.batch, RunBudget: -1, ReusePasses: 1000})
			if tc.screen {
				memscan.ScreenAlways(d)
			}
			res, err := d.Pass(context.Background(), src, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := addrs(res, "edge"); !reflect.DeepEqual(got, want) {
				t.Fatalf("addresses:\n got %#x\nwant %#x", got, want)
			}
			// far's strings lie in blocks 0 and 6: no window holds both. near's lie in
			// block 4's own bytes and at block 5's second byte, which window 4 also
			// holds in its overlap: window 4 matches, and keeps only the string that
			// starts in its own bytes; window 5 alone holds one string, no match.
			if got := addrs(res, "far"); len(got) != 0 {
				t.Errorf("far: a pair across windows reported at %#x", got)
			}
			if got := addrs(res, "near"); !reflect.DeepEqual(got, []uint64{4*bs + ov - 5}) {
				t.Errorf("near reported at %#x, want %#x", got, 4*bs+ov-5)
			}
			if len(res.Errors) > 0 || res.BlocksScanned != size/bs || res.BytesInPlace != 0 {
				t.Fatalf("scanned %d of %d blocks, %d bytes in place, errors %v", res.BlocksScanned, size/bs, res.BytesInPlace, res.Errors)
			}
			if tc.screen && res.BlocksScreened == 0 {
				t.Errorf("no block settled by the screen")
			}
			if !tc.screen && res.BlocksScreened != 0 {
				t.Errorf("%d blocks settled by the screen with a cheap rule set", res.BlocksScreened)
			}
			second, _ := d.Pass(context.Background(), src, opts)
			if second.BlocksUnchanged != size/bs || second.BlocksScanned != 0 {
				t.Fatalf("unchanged pass: %d unchanged, %d scanned", second.BlocksUnchanged, second.BlocksScanned)
			}
			if got := addrs(second, "edge"); !reflect.DeepEqual(got, want) {
				t.Fatalf("unchanged pass addresses:\n got %#x\nwant %#x", got, want)
			}
			// Move the marker at the start of block 2 (edge k=2) into block 9's
			// overlap (k=10's first bytes), replacing the one at the edge of k=10.
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			old := uint64(2 * bs)
			moved := uint64(10*bs + 100)
			if _, err := f.WriteAt([]byte("XXXXXXXXXXXXXX"), int64(old)); err != nil {
				t.Fatal(err)
			}
			m := make([]byte, ml)
			copy(m, img[old:])
			if _, err := f.WriteAt(m, int64(moved)); err != nil {
				t.Fatal(err)
			}
			third, _ := d.Pass(context.Background(), src, opts)
			// Blocks 1 and 2 hold the first change (in 2's first bytes: 1's overlap), 9
			// and 10 the second.
			if third.BlocksScanned != 4 {
				t.Errorf("after two changes %d blocks scanned, want 4", third.BlocksScanned)
			}
			var want3 []uint64
			for _, a := range want {
				if a != old {
					want3 = append(want3, a)
				}
			}
			want3 = append(want3, moved)
			sort.Slice(want3, func(i, j int) bool { return want3[i] < want3[j] })
			if got := addrs(third, "edge"); !reflect.DeepEqual(got, want3) {
				t.Fatalf("after the move:\n got %#x\nwant %#x", got, want3)
			}
			// Restore for the next case.
			if _, err := f.WriteAt(img[old:old+uint64(ml)], int64(old)); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(img[moved:moved+uint64(ml)], int64(moved)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestScreenOnlyWherePays: a worker screens runs of windows only when the rule set's
// fixed cost per scan (what a screen saves per window) is a fair share of a window's
// time alone. With a few literal rules it scans window by window; with a rule whose
// condition alone costs much per scan (a loop of 200,000 steps, never true) it
// screens, and settles the windows without a marker by the screen. Both find the
// same markers, once each. With a rule that matches where its string is absent (so
// that every window without a string match reports it: what the worker learns from
// its few bytes measuring the fixed cost), and with one whose string is zeros (the few
// bytes match: learnt from a window instead), the screened pass reports what a pass
// scanning each window alone reports.
func TestScreenOnlyWherePays(t *testing.T) {
	const bs, size = 64 << 10, 4 << 20
	img := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	want := []uint64{0x10000 - 3, 0x123456, 0x200000}
	for _, a := range want {
		copy(img[a:], "PAYS-MARKER")
	}
	path := filepath.Join(t.TempDir(), "ram")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := memscan.OpenFile(path, memscan.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const lit = `rule lit { strings: $a = "PAYS-MARKER" condition: $a }`
	const slow = "\nrule slow { condition: for any i in (0..200000): (i == 300000) }"
	const absent = `
rule absent { strings: $a = "NEVER-IN-THE-IMAGE" condition: not $a }`
	for _, tc := range []struct {
		name   string
		rules  string
		screen bool
	}{
		{"cheap", lit, false},
		{"heavy conditions", lit + slow, true},
		{"heavy, quiet", lit + slow + absent, true},
		{"heavy, quiet, zeros", lit + slow + absent + "\nrule z { strings: $z = { 00 00 00 00 00 00 00 00 } condition: $z }", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := compile(t, tc.rules)
			d := memscan.NewDriver(memscan.DriverConfig{BlockSize: bs, Workers: 1, RunBudget: -1})
			res, err := d.Pass(context.Background(), src, memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }})
			if err != nil {
				t.Fatal(err)
			}
			if got := addrs(res, "lit"); !reflect.DeepEqual(got, want) {
				t.Fatalf("addresses %#x, want %#x", got, want)
			}
			if len(res.Errors) > 0 || res.BlocksScanned != size/bs {
				t.Fatalf("scanned %d of %d blocks, errors %v", res.BlocksScanned, size/bs, res.Errors)
			}
			if screened := res.BlocksScreened > 0; screened != tc.screen {
				t.Errorf("%d of %d blocks settled by the screen, want screening %v", res.BlocksScreened, res.BlocksScanned, tc.screen)
			}
			t.Logf("%d of %d blocks settled by the screen", res.BlocksScreened, res.BlocksScanned)
			da := memscan.NewDriver(memscan.DriverConfig{BlockSize: bs, Workers: 1, RunBudget: -1})
			alone, err := da.Pass(context.Background(), src, memscan.PassOptions{Rules: func() memscan.RuleSet { return aloneOf{rs} }})
			if err != nil || len(alone.Errors) > 0 || alone.BlocksScreened != 0 {
				t.Fatal(err, alone.Errors, alone.BlocksScreened)
			}
			if !reflect.DeepEqual(res.Matches, alone.Matches) {
				t.Errorf("screened and alone differ:\nscreened %s\nalone    %s", summary(res.Matches), summary(alone.Matches))
			}
		})
	}
}

// aloneOf is a rule set whose scanners cannot screen: every window is scanned alone.
type aloneOf struct{ memscan.RuleSet }

func (a aloneOf) NewScanner() (memscan.BlockScanner, error) {
	sc, err := a.RuleSet.NewScanner()
	return struct{ memscan.BlockScanner }{sc}, err
}
