package memscan_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// TestScreenedPassFindsWhatWindowsAloneFind: with real YARA rules, a pass whose
// workers screen runs of windows in one libyara scan (memscan.Screener) reports exactly
// what a pass scanning every window alone reports: the same rules, strings and
// addresses, the same blocks scanned, zero and unchanged, over 12 MiB of dense random
// memory with markers planted inside windows, across block edges, in the overlaps and
// at the start and end of blocks, pairs and counts split over windows of one run (which
// a run as a whole would satisfy, and no window alone does), a marker at a fixed
// address, zero blocks and blocks with zero pages at their edges; then a second pass
// after changes (incremental: only changed blocks are scanned). Copied (a source in a
// slice) and in place (a sealed memfd). And it screens: windows without markers are
// settled by the screen.
func TestScreenedPassFindsWhatWindowsAloneFind(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s.yar"), []byte(`
rule lit { strings: $a = "SCREEN-LIT" condition: $a }
rule wide_nc { strings: $a = "ScrWide" wide nocase condition: $a }
rule pair { strings: $a = "SCR-PAIR-1" $b = "SCR-PAIR-2" condition: $a and $b }
rule two { strings: $a = "SCR-TWO-A" $b = "SCR-TWO-B" $c = "SCR-TWO-C" condition: 2 of them }
rule cnt { strings: $a = "SCR-CNT" condition: #a >= 3 }
rule notb { strings: $a = "SCR-NOT-A" $b = "SCR-NOT-B" condition: $a and not $b }
rule once { strings: $a = "SCR-ONCE" condition: #a == 1 }
rule re { strings: $a = /SCR-RE-[0-9]{4,12}-END/ condition: $a }
rule hexj { strings: $a = { 53 43 52 2d 48 [2-30] 45 58 } condition: $a }
rule fixed { strings: $a = "SCR-FIXED" condition: $a at 0x500000 }
rule hdr { strings: $a = "SCR-HDR" condition: uint16(0x1000) == 0x5A4D and $a }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := yara.Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	const bs, size = memscan.DefaultBlockSize, 16 << 20
	const marked = 12 << 20 // the last 16 windows hold no marker
	rng := rand.New(rand.NewPCG(7, 8))
	ram := make(ramSrc, size)
	for i := range ram {
		ram[i] = byte(rng.Uint32())
	}
	copy(ram[0x1000:], "MZ")
	copy(ram[0x500000:], "SCR-FIXED")
	markers := []string{"SCREEN-LIT", "S\x00c\x00r\x00W\x00i\x00d\x00e\x00", "SCR-PAIR-1", "SCR-PAIR-2", "SCR-TWO-A", "SCR-TWO-B",
		"SCR-TWO-C", "SCR-CNT", "SCR-NOT-A", "SCR-NOT-B", "SCR-ONCE", "SCR-RE-123456-END", "SCR-H12345EX", "SCR-HDR"}
	plant := func(n int) {
		for range n {
			m := markers[rng.IntN(len(markers))]
			b := 1 + rng.IntN(marked/bs-1)
			var at int
			switch rng.IntN(4) {
			case 0: // across a block edge
				at = b*bs - 1 - rng.IntN(len(m)-1)
			case 1: // in the overlap of the window before, or at a block's start
				at = b*bs + rng.IntN(memscan.DefaultOverlap)
			case 2: // at a block's end
				at = b*bs - len(m)
			default:
				at = rng.IntN(marked - len(m))
			}
			copy(ram[at:], m)
		}
	}
	zeros := func() {
		clear(ram[3*bs : 4*bs+memscan.DefaultOverlap]) // a zero window
		clear(ram[5*bs : 5*bs+12<<10])                 // zero pages at a block's start
		clear(ram[7*bs-8<<10 : 7*bs+1000])             // at a block's end and into the next
	}
	plant(12)
	// Split over two windows of one run: a pair, counts.
	for _, p := range [][]string{{"SCR-PAIR-1", "SCR-PAIR-2"}, {"SCR-TWO-A", "SCR-TWO-C"}, {"SCR-CNT", "SCR-CNT", "SCR-CNT"},
		{"SCR-NOT-A", "SCR-NOT-B"}, {"SCR-ONCE", "SCR-ONCE"}} {
		b := 16*rng.IntN(marked/bs/16) + 8 + rng.IntN(4)
		for i, m := range p {
			copy(ram[(b+2*i)*bs+5000:], m)
		}
	}
	zeros()
	screened := yara.MemoryRules{Rules: r}
	ds, da := memscan.NewDriver(memscan.DriverConfig{Workers: 2, InPlace: true}), memscan.NewDriver(memscan.DriverConfig{Workers: 2, InPlace: true})
	memscan.ScreenAlways(ds)
	opts := func(rs memscan.RuleSet) memscan.PassOptions {
		return memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}
	}
	compare := func(name string, src memscan.Source, pass int) {
		t.Helper()
		s, err := ds.Pass(context.Background(), src, opts(screened))
		if err != nil || len(s.Errors) > 0 {
			t.Fatal(err, s.Errors)
		}
		a, err := da.Pass(context.Background(), src, opts(aloneRules{screened}))
		if err != nil || len(a.Errors) > 0 {
			t.Fatal(err, a.Errors)
		}
		t.Logf("%s pass %d: %d blocks, %d zero, %d unchanged, %d scanned, %d settled by the screen; matched %s",
			name, pass, s.Blocks, s.BlocksZero, s.BlocksUnchanged, s.BlocksScanned, s.BlocksScreened, summary(s.Matches))
		if !reflect.DeepEqual(s.Matches, a.Matches) {
			t.Errorf("%s pass %d: screened and alone differ:\nscreened %s\nalone    %s", name, pass, summary(s.Matches), summary(a.Matches))
		}
		if s.BlocksScanned != a.BlocksScanned || s.BlocksZero != a.BlocksZero || s.BlocksUnchanged != a.BlocksUnchanged || s.BytesScanned != a.BytesScanned {
			t.Errorf("%s pass %d: blocks differ: screened %+v, alone %+v", name, pass, counts(s), counts(a))
		}
		// At least the run without markers is settled by the screen.
		if a.BlocksScreened != 0 || pass == 0 && s.BlocksScreened < (size-marked)/bs {
			t.Errorf("%s pass %d: %d of %d blocks settled by the screen (alone: %d)", name, pass, s.BlocksScreened, s.BlocksScanned, a.BlocksScreened)
		}
		if pass == 0 && (len(s.Matches) < 7 || s.BlocksZero != 1) {
			t.Errorf("%s: %d rules matched, %d zero blocks: the test data should match most rules and hold one zero block", name, len(s.Matches), s.BlocksZero)
		}
	}
	compare("copied", ram, 0)
	plant(4)
	for range 3 {
		at := rng.IntN(size - 64)
		copy(ram[at:], fmt.Sprint("changed ", at))
	}
	zeros()
	compare("copied", ram, 1)

	// The same bytes in a sealed memfd, scanned in place.
	mf, path := memscan.SealedMemfd(t, ram)
	sealed, err := memscan.OpenFile(path, memscan.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer sealed.Close()
	ds.Forget()
	da.Forget()
	compare("in place", sealed, 0)
	if _, err := mf.WriteAt([]byte("SCREEN-LIT"), 9*bs-4); err != nil {
		t.Fatal(err)
	}
	compare("in place", sealed, 1)
}

func summary(ms []detectors.Match) string {
	var out []string
	for _, m := range ms {
		var addrs []string
		for _, s := range m.Strings {
			addrs = append(addrs, fmt.Sprintf("%s@%#x", s.Name, s.Offset))
		}
		out = append(out, fmt.Sprintf("%s%v", m.Rule, addrs))
	}
	return fmt.Sprint(out)
}

func counts(p memscan.PassResult) string {
	return fmt.Sprintf("blocks %d zero %d unchanged %d scanned %d screened %d bytes %d", p.Blocks, p.BlocksZero, p.BlocksUnchanged, p.BlocksScanned, p.BlocksScreened, p.BytesScanned)
}
