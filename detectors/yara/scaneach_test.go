package yara

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

// TestScanEachAgreesWithScan: ScanEach over a run of windows (overlapping ones, an empty
// one, one at a fixed address a condition reads, one whose scan times out between two
// that do not) returns what Scan returns for each window alone: the same matches,
// addresses, metas, tags and Window flags, the same error for the failed window, and
// the windows after a failure still scanned.
func TestScanEachAgreesWithScan(t *testing.T) {
	dir := writeRules(t, map[string]string{"a.yar": `
rule lit : t1 { meta: s = "str" i = 7 strings: $a = "MARK-ONE" $b = "MARK-TWO" wide condition: any of them }
rule mz { condition: uint16(0x10040000) == 0x5A4D }
rule many { strings: $z = "ZZ" condition: #z > 3 }
rule quiet { strings: $q = "NEVER-THERE" condition: not $q }
rule slow { strings: $m = "SLOW-HERE" condition: $m and for any i in (0..0x7fffffff) : (uint8(0x10080000 + (i % 16)) == 0x99) }
`})
	r, err := Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.NewMemoryScanner(time.Second, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const win = 256 << 10
	buf := make([]byte, 5*win)
	copy(buf[0x100:], "MARK-ONE")
	copy(buf[win-4:], "MARK-ONE") // across the first window's end: in the second only
	copy(buf[win:], "MZ")
	copy(buf[win+0x300:], []byte("M\x00A\x00R\x00K\x00-\x00T\x00W\x00O\x00"))
	copy(buf[2*win+0x10:], "SLOW-HERE")
	copy(buf[3*win+0x1000:], bytes.Repeat([]byte("Z"), 600))
	copy(buf[4*win+0x20:], "MARK-ONE")
	base := uint64(0x10000000)
	offs := []int{0, win - 64, win, 2 * win, 3 * win, 4 * win, 4*win + 4096}
	lens := []int{win, win, win, win, win, 0, win - 4096}
	bases := make([]uint64, len(offs))
	for i, o := range offs {
		bases[i] = base + uint64(o)
	}
	outs, errs := s.ScanEach(buf, offs, lens, bases)
	if len(outs) != len(offs) || len(errs) != len(offs) {
		t.Fatalf("%d results and %d errors for %d windows", len(outs), len(errs), len(offs))
	}
	for i := range offs {
		want, werr := s.Scan(buf[offs[i]:offs[i]+lens[i]], bases[i])
		if !reflect.DeepEqual(outs[i], want) {
			t.Errorf("window %d (%#x+%d): ScanEach\n%+v\nScan\n%+v", i, bases[i], lens[i], outs[i], want)
		}
		if (errs[i] == nil) != (werr == nil) || (werr != nil && errs[i].Error() != werr.Error()) {
			t.Errorf("window %d: ScanEach error %v, Scan error %v", i, errs[i], werr)
		}
	}
	var te interface{ Timeout() bool }
	if !errors.As(errs[3], &te) || !te.Timeout() {
		t.Errorf("window 3 (SLOW-HERE): error %v, want a timeout", errs[3])
	}
	for _, i := range []int{0, 1, 2, 4, 6} {
		if errs[i] != nil {
			t.Errorf("window %d: %v", i, errs[i])
		}
		if len(outs[i]) == 0 {
			t.Errorf("window %d: no match (quiet matches everywhere)", i)
		}
	}
	rules := func(ms []string) map[string]bool {
		m := map[string]bool{}
		for _, n := range ms {
			m[n] = true
		}
		return m
	}
	if len(outs[5]) != 0 || errs[5] != nil {
		t.Errorf("the empty window: %v, %v", outs[5], errs[5])
	}
	for i, want := range map[int][]string{0: {"lit", "quiet"}, 2: {"lit", "mz", "quiet"}, 4: {"many", "quiet"}, 6: {"quiet"}} {
		got := map[string]bool{}
		for _, m := range outs[i] {
			got[m.Rule] = true
		}
		if !reflect.DeepEqual(got, rules(want)) {
			t.Errorf("window %d matched %v, want %v", i, got, want)
		}
	}
}
