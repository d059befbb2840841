package memscan_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// ramSrc is guest RAM in a slice at GPA 0.
type ramSrc []byte

func (m ramSrc) Ranges() []memscan.Range { return []memscan.Range{{GPA: 0, Size: uint64(len(m))}} }
func (m ramSrc) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || int(gpa)+len(p) > len(m) {
		return 0, memscan.ErrOutOfRange
	}
	return copy(p, m[gpa:]), nil
}
func (m ramSrc) Close() error { return nil }

// aloneRules hides the scanner's batched screen: every window is scanned alone, as
// before batching.
type aloneRules struct{ yara.MemoryRules }

func (a aloneRules) NewScanner() (memscan.BlockScanner, error) {
	sc, err := a.MemoryRules.NewScanner()
	return struct{ memscan.BlockScanner }{sc}, err
}

// TestSeamBatchesFindWhatWindowsAloneFind: with real YARA rules, the seam scan with
// batched screens reports exactly what it reports scanning every window alone (the
// same seams, rules, strings and addresses), over 600 seams of 4 MiB of random RAM
// with markers split across some of them, seams sharing a left frame, rules whose
// conditions look at other strings, and a second pass after changes. And it scans few
// windows alone.
func TestSeamBatchesFindWhatWindowsAloneFind(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s.yar"), []byte(`
rule lit { strings: $a = "SEAM-MARKER-LIT" condition: $a }
rule notb { strings: $a = "SEAM-NOT-A" $b = "SEAM-NOT-B" condition: $a and not $b }
rule pair { strings: $a = "SEAM-PAIR-1" $b = "SEAM-PAIR-2" condition: $a and $b }
rule re { strings: $a = /SEAM-RE-[0-9]{4,12}-END/ condition: $a }
rule hexj { strings: $a = { 53 45 41 4d 2d 48 [2-30] 45 58 } condition: $a }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := yara.Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	const frames = 1024
	ram := make(ramSrc, frames*memscan.PageSize)
	for i := range ram {
		ram[i] = "SEAM-0123456789 NOTPAIRBX\x00"[rng.IntN(26)]
	}
	markers := []string{"SEAM-MARKER-LIT", "SEAM-NOT-A", "SEAM-NOT-B", "SEAM-PAIR-1", "SEAM-PAIR-2", "SEAM-RE-123456-END", "SEAM-H12345EX"}
	var seams []memscan.Seam
	for len(seams) < 600 {
		l, rt := uint64(rng.IntN(frames)), uint64(rng.IntN(frames))
		if l == rt || l+1 == rt {
			continue
		}
		sm := memscan.Seam{Left: l * memscan.PageSize, Right: rt * memscan.PageSize}
		seams = append(seams, sm)
		if rng.IntN(5) == 0 { // another seam from the same left frame
			seams = append(seams, memscan.Seam{Left: sm.Left, Right: uint64((rt+7)%frames) * memscan.PageSize})
		}
		if rng.IntN(3) == 0 {
			m := markers[rng.IntN(len(markers))]
			k := 1 + rng.IntN(len(m)-1)
			copy(ram[sm.Left+memscan.PageSize-uint64(k):], m[:k])
			copy(ram[sm.Right:], m[k:])
		}
	}
	batched := yara.MemoryRules{Rules: r}
	run := func(rs memscan.RuleSet) memscan.SeamResult {
		t.Helper()
		sc := memscan.NewSeamScanner(0, 2, 1)
		res, err := sc.Scan(context.Background(), ram, seams, rs, nil)
		if err != nil || len(res.Errors) > 0 {
			t.Fatal(err, res.Errors)
		}
		return res
	}
	for pass := range 2 {
		b, a := run(batched), run(aloneRules{batched})
		t.Logf("pass %d: %d seams, %d scanned, %d of them alone after the screen, %d matches", pass, b.Seams, b.Scanned, b.Alone, len(b.Matches))
		if !reflect.DeepEqual(b.Matches, a.Matches) || b.Scanned != a.Scanned || b.Zero != a.Zero {
			t.Fatalf("batched and alone differ:\nbatched %+v\nalone   %+v", b, a)
		}
		if len(b.Matches) < 20 || b.Alone == 0 || b.Alone > b.Scanned/2 || a.Alone != 0 {
			t.Fatalf("pass %d: %d matches, %d of %d scanned alone (alone path: %d)", pass, len(b.Matches), b.Alone, b.Scanned, a.Alone)
		}
		// Change some sides for the second pass.
		for range 50 {
			sm := seams[rng.IntN(len(seams))]
			copy(ram[sm.Right:], "SEAM-NOT-B")
		}
	}
}
