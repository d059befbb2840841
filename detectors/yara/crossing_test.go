package yara

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestCrossingAgreesWithScanAlone: the batched screen marks every window whose scan
// alone keeps a string match across the cut (what the seam scan keeps), whatever the
// rules' conditions and the other windows of the batch, over many batches of windows
// with markers planted across, before and after the cut, rules with conditions that
// depend on other strings (and, not, counts), strings at a fixed address, private
// strings, fullword, wide/nocase, xor, hex jumps and regexps anchored to the window's
// start. And it screens: most windows are not marked.
func TestCrossingAgreesWithScanAlone(t *testing.T) {
	const win, at = 4096, 2048
	const base0, stride = 0x100000, 0x3000
	atAddr := uint64(base0 + 5*stride + at - 3) // window 5 of each batch
	dir := writeRules(t, map[string]string{"a.yar": fmt.Sprintf(`
rule lit { strings: $a = "CROSS-LIT" condition: $a }
rule wide_nc { strings: $a = "WideNc" wide nocase condition: $a }
rule fw { strings: $a = "FULLWORD" fullword condition: $a }
rule both { strings: $a = "PAIR-ONE" $b = "PAIR-TWO" condition: $a and $b }
rule notb { strings: $a = "NOT-A" $b = "NOT-B" condition: $a and not $b }
rule once { strings: $a = "ONCE" condition: #a == 1 }
rule anchored { strings: $a = /^QQ[A-Z ]{2040,2060}/ condition: $a }
rule re { strings: $a = /AB[XYZ]{3,40}BA/ condition: $a }
rule hex { strings: $a = { 43 52 [1-20] 53 53 } condition: $a }
rule xr { strings: $a = "XORME" xor condition: $a }
rule at_addr { strings: $a = "ATADDR" condition: $a at %#x }
rule priv { strings: $p = "PRIVATE-S" private condition: $p }
rule greedy { strings: $a = /GR[A-Z]*EE/ condition: $a }
`, atAddr)})
	r, err := Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.NewMemoryScanner(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	markers := []string{"CROSS-LIT", "W\x00I\x00D\x00E\x00N\x00C\x00", "wIdEnC", "FULLWORD", "xFULLWORD", "PAIR-ONE", "PAIR-TWO",
		"NOT-A", "NOT-B", "ONCE", "ABXYZXYBA", "CR1234SS", "ATADDR", "PRIVATE-S", "GRAAAAAEE", "GRAEE"}
	xored := []byte("XORME")
	for i := range xored {
		xored[i] ^= 0x5a
	}
	markers = append(markers, string(xored))
	rng := rand.New(rand.NewPCG(3, 4))
	const alphabet = "ABXYZEGRQ \x00"
	alone, hits, total := 0, 0, 0
	for batch := range 30 {
		n := 2 + rng.IntN(40)
		buf := make([]byte, n*win)
		bases := make([]uint64, n)
		for i := range n {
			bases[i] = uint64(base0 + i*stride)
			w := buf[i*win : (i+1)*win]
			for j := range w {
				w[j] = alphabet[rng.IntN(len(alphabet))]
			}
			if i == 5 {
				copy(w[at-3:], "ATADDR")
			}
			if rng.IntN(3) == 0 {
				copy(w, "QQ") // the anchored regexp from the start, across the cut
			}
			for range rng.IntN(4) {
				m := markers[rng.IntN(len(markers))]
				copy(w[at-len(m)-8+rng.IntN(len(m)+16):], m)
			}
		}
		hit, err := s.Crossing(buf, win, bases, at)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			ms, err := s.Scan(buf[i*win:(i+1)*win], bases[i])
			if err != nil {
				t.Fatal(err)
			}
			var across []string
			for _, m := range ms {
				for _, sm := range m.Strings {
					if sm.Offset < at && sm.Offset+uint64(sm.Length) > at {
						across = append(across, m.Rule+sm.Name)
					}
				}
			}
			total++
			if hit[i] {
				hits++
			}
			if len(across) > 0 {
				alone++
				if !hit[i] {
					t.Errorf("batch %d window %d: alone it keeps %v across the cut, the batch screen missed it", batch, i, across)
				}
			}
		}
	}
	t.Logf("%d windows: %d keep a match across the cut alone, %d marked by the screen", total, alone, hits)
	if alone < total/10 || hits >= total*3/4 {
		t.Errorf("test data: %d of %d windows keep a match, %d marked: want some of each and a screen that screens", alone, total, hits)
	}
	// Overlapping windows are refused, chained strings are not batched.
	if _, err := s.Crossing(make([]byte, 2*win), win, []uint64{0x1000, 0x1800}, at); err == nil {
		t.Error("overlapping windows accepted")
	}
	dir2 := writeRules(t, map[string]string{"c.yar": `rule chained { strings: $a = { 43 52 [300-400] 53 53 } condition: $a }`})
	r2, err := Compile(dir2)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := r2.NewMemoryScanner(0, 0)
	defer s2.Close()
	if _, err := s2.Crossing(make([]byte, 2*win), win, []uint64{0x1000, 0x3000}, at); !errors.Is(err, ErrNoBatch) {
		t.Errorf("chained strings: %v, want ErrNoBatch", err)
	}
}

// FuzzCrossing: whatever the windows' bytes, the batched screen marks every window whose
// scan alone keeps a string match across the cut. data fills n windows of 1 KiB (cut at
// 512) in turn; the rules' strings are short and drawn from a small alphabet, so that
// fuzzed bytes hit them.
func FuzzCrossing(f *testing.F) {
	const win, at = 1024, 512
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.yar"), []byte(`
rule lit { strings: $a = "ABAB" condition: $a }
rule fw { strings: $a = "BAB" fullword condition: $a }
rule widenc { strings: $a = "AB" wide nocase $b = "ZZZZ" condition: $a and not $b }
rule cnt { strings: $a = "AA" condition: #a == 2 }
rule re { strings: $a = /B[AZ]{2,30}B/ condition: $a }
rule anch { strings: $a = /^A[ABZ]{500,600}/ condition: $a }
rule hexj { strings: $a = { 41 5A [0-8] 5A 41 } condition: $a }
rule at0 { strings: $a = "ZAZ" condition: $a at 0x4001fe }
rule priv { strings: $a = "BZB" private condition: $a }
`), 0o644); err != nil {
		f.Fatal(err)
	}
	r, err := Compile(dir)
	if err != nil {
		f.Fatal(err)
	}
	s, err := r.NewMemoryScanner(0, 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint8(3), []byte("ABABZAZBAABZZB"))
	f.Add(uint8(2), []byte("A\x00B\x00ZZZZ BAB AA"))
	f.Fuzz(func(t *testing.T, n uint8, data []byte) {
		k := 2 + int(n)%6
		if len(data) == 0 {
			return
		}
		buf := make([]byte, k*win)
		for i := range buf {
			buf[i] = data[i%len(data)]
		}
		bases := make([]uint64, k)
		for i := range k {
			bases[i] = 0x400000 + uint64(i)*0x1000 - 0x200*uint64(i%2)
		}
		hit, err := s.Crossing(buf, win, bases, at)
		if err != nil {
			t.Fatal(err)
		}
		for i := range k {
			ms, err := s.Scan(buf[i*win:(i+1)*win], bases[i])
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				for _, sm := range m.Strings {
					if sm.Offset < at && sm.Offset+uint64(sm.Length) > at && !hit[i] {
						t.Fatalf("window %d: alone %s%s at %d+%d crosses the cut; the screen missed it", i, m.Rule, sm.Name, sm.Offset, sm.Length)
					}
				}
			}
		}
	})
}
