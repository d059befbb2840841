package yara

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
)

// screenRules mixes what the screen must get right: plain strings, conditions over
// several strings that a run of windows satisfies and no single window does (both, two,
// cnt), non-monotone conditions (notb, once, quiet: it matches wherever its string is
// absent, so windows without any match report it), a read at a fixed address (hdr) and
// one at a match (rd, sensitive: the screen's reads pass its guards), a
// rule referring to another (ref), a global rule, private strings, fullword, wide,
// hex jumps, a chained hex string (pieces far apart), regexps anchored to a window's
// start, and a string at a fixed address.
const screenRules = `
rule lit { strings: $a = "SCR-LIT" condition: $a }
rule wide_nc { strings: $a = "WideNc" wide nocase condition: $a }
rule fw { strings: $a = "FULLWORD" fullword condition: $a }
rule both { strings: $a = "PAIR-ONE" $b = "PAIR-TWO" condition: $a and $b }
rule two { strings: $a = "TWO-A" $b = "TWO-B" $c = "TWO-C" condition: 2 of them }
rule cnt { strings: $a = "CNT" condition: #a >= 3 }
rule notb { strings: $a = "NOT-A" $b = "NOT-B" condition: $a and not $b }
rule once { strings: $a = "ONCE" condition: #a == 1 }
rule quiet { strings: $a = "QUIET-GONE" condition: not $a }
rule hdr { strings: $a = "HDR" condition: uint16(0x1000) == 0x5A4D and $a }
private rule inner { strings: $a = "INNER" condition: $a }
rule ref { strings: $a = "OUTER" condition: inner and $a }
rule anchored { strings: $a = /^QQ[A-Z ]{100,400}/ condition: $a }
rule re { strings: $a = /AB[XYZ]{3,40}BA/ condition: $a }
rule hex { strings: $a = { 43 52 [1-20] 53 53 } condition: $a }
rule chain { strings: $a = { 4B 4C [300-600] 4D 4E } condition: $a }
rule at_addr { strings: $a = "ATADDR" condition: $a at 0x101800 }
rule priv { strings: $p = "PRIVATE-S" private condition: $p }
rule rd { strings: $a = "RD-AT" condition: uint8(@a[1] + 5) == 0x21 }
`

const screenGlobal = `
global rule g { strings: $a = "GLOBAL-ON" condition: $a or true }
rule in_g { strings: $a = "IN-G" condition: $a }
`

// screenShortcut has no rule that matches every run, so that runs where no monotone
// rule matches take the shortcut (only sensitive rules' strings make hits): notb and
// once are sensitive, and so are the global rule g2 and in_g2, which g2 decides for
// (g2 holds only in windows with G2-ON).
const screenShortcut = `
global rule g2 { strings: $a = "G2-ON" condition: $a }
rule in_g2 { strings: $a = "IN-G2" condition: not $a }
`

// TestScreenAgreesWithScanAlone: every window the screen passes (no hit) reports alone
// exactly what every other passed window reports, and that result has no string
// matches; windows that report a string match alone are always hits. Windows overlap
// their neighbour as the memory driver's do, markers are planted inside, across window
// edges and in the overlaps, runs hold 2 to 24 windows, and a window holds the fixed
// address hdr reads. Two rule sets: one with rules that match in every run (hits are
// windows with any string match), one where most runs match no monotone rule (hits are
// windows with strings of sensitive rules). And it screens: many windows pass.
func TestScreenAgreesWithScanAlone(t *testing.T) {
	for _, tc := range []struct {
		name        string
		files       map[string]string
		quiet       string
		sensitive   []string
		insensitive []string
	}{
		{"every run matches", map[string]string{"a.yar": screenRules, "g.yar": screenGlobal}, "[quiet g]",
			[]string{"notb", "once", "quiet", "g", "rd"}, []string{"lit", "both", "two", "cnt", "hdr", "ref", "inner", "chain", "in_g"}},
		{"shortcut", map[string]string{"a.yar": strings.ReplaceAll(screenRules, "rule quiet", "rule quiet_off"), "g2.yar": screenShortcut}, "[quiet_off]",
			[]string{"notb", "once", "g2", "in_g2", "rd"}, []string{"lit", "both", "two", "cnt", "hdr", "ref", "inner", "chain"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Compile(writeRules(t, tc.files))
			if err != nil {
				t.Fatal(err)
			}
			if !r.screen || !r.shortcut || len(r.roots) != 1 || r.roots[0] != (readRoot{0x1000, 2}) {
				t.Fatalf("screen %v shortcut %v roots %v: want screened, shortcut, one root at 0x1000", r.screen, r.shortcut, r.roots)
			}
			for _, name := range tc.sensitive {
				if !r.sensitive[name] {
					t.Errorf("rule %s not sensitive", name)
				}
			}
			for _, name := range tc.insensitive {
				if r.sensitive[name] {
					t.Errorf("rule %s sensitive", name)
				}
			}
			screenAgrees(t, r, tc.quiet)
		})
	}
}

func screenAgrees(t *testing.T, r *Rules, wantQuiet string) {
	s, err := r.NewMemoryScanner(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	markers := []string{"SCR-LIT", "W\x00I\x00D\x00E\x00N\x00C\x00", "FULLWORD", "xFULLWORD", "PAIR-ONE", "PAIR-TWO",
		"TWO-A", "TWO-B", "TWO-C", "CNT", "NOT-A", "NOT-B", "ONCE", "QUIET-GONE", "HDR", "INNER", "OUTER",
		"ABXYZXYBA", "CR1234SS", "KL", "MN", "ATADDR", "PRIVATE-S", "IN-G", "GLOBAL-ON", "G2-ON", "IN-G2", "RD-AT!", "RD-AT?"}
	const win, ov = 4096, 512
	rng := rand.New(rand.NewPCG(5, 6))
	const alphabet = "ABXYZQ .\x00"
	var quiet []detectors.Match
	quietSet := false
	passed, total, stringsAlone := 0, 0, 0
	for run := range 60 {
		n := 2 + rng.IntN(23)
		base0 := uint64(0x100000)
		if run == 0 {
			base0 = 0 // window 1 holds address 0x1000
		}
		mem := make([]byte, n*win+ov)
		for j := range mem {
			mem[j] = alphabet[rng.IntN(len(alphabet))]
		}
		if run == 0 {
			copy(mem[0x1000:], "MZ")
		}
		if rng.IntN(3) == 0 {
			copy(mem[0x1800:], "ATADDR")
		}
		for range rng.IntN(n) {
			m := markers[rng.IntN(len(markers))]
			switch rng.IntN(3) {
			case 0: // across a window's edge, or in an overlap
				e := win * (1 + rng.IntN(n))
				copy(mem[max(0, e-len(m)+rng.IntN(len(m)+ov)):], m)
			case 1:
				copy(mem[rng.IntN(len(mem)-len(m)):], m)
			default: // the chain's pieces, far apart in one window or across two
				p := rng.IntN(len(mem) - 1000)
				copy(mem[p:], "KL")
				copy(mem[p+300+rng.IntN(400):], "MN")
			}
		}
		if rng.IntN(4) == 0 {
			copy(mem[win*rng.IntN(n):], "QQ")
		}
		if rng.IntN(2) == 0 {
			// Non-monotone rules that hold in a window and not in the run: a pair split
			// over two windows, a string once in each of two windows.
			pair := [][2]string{{"NOT-A", "NOT-B"}, {"ONCE", "ONCE"}, {"IN-G2", "G2-ON"}}[rng.IntN(3)]
			copy(mem[rng.IntN(n)*win+100+rng.IntN(3000):], pair[0])
			copy(mem[rng.IntN(n)*win+100+rng.IntN(3000):], pair[1])
		}
		wins := make([][]byte, n)
		bases := make([]uint64, n)
		for i := range n {
			wins[i] = mem[i*win : (i+1)*win+ov]
			bases[i] = base0 + uint64(i*win)
		}
		hit, err := s.Screen(wins, bases)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			ms, err := s.Scan(wins[i], bases[i])
			if err != nil {
				t.Fatal(err)
			}
			total++
			withStrings := false
			for _, m := range ms {
				withStrings = withStrings || len(m.Strings) > 0
			}
			if withStrings {
				stringsAlone++
			}
			if hit[i] {
				continue
			}
			passed++
			if withStrings {
				t.Errorf("run %d window %d at %#x: passed by the screen, alone it reports %s", run, i, bases[i], names(ms))
				continue
			}
			if !quietSet {
				quiet, quietSet = ms, true
			} else if !reflect.DeepEqual(ms, quiet) {
				t.Errorf("run %d window %d at %#x: passed by the screen, alone it reports %s, other passed windows %s", run, i, bases[i], names(ms), names(quiet))
			}
		}
	}
	t.Logf("%d windows: %d report string matches alone, %d passed by the screen (quiet result: %s)", total, stringsAlone, passed, names(quiet))
	if stringsAlone < total/10 || passed < total/3 || names(quiet) != wantQuiet {
		t.Errorf("test data: %d of %d windows report strings, %d passed, quiet %s: want some of each, a screen that screens, and quiet %s", stringsAlone, total, passed, names(quiet), wantQuiet)
	}
	// Out of order windows are refused.
	if _, err := s.Screen([][]byte{make([]byte, 16), make([]byte, 16)}, []uint64{0x2000, 0x1000}); err == nil {
		t.Error("windows out of order accepted")
	}
}

func names(ms []detectors.Match) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Rule)
	}
	return fmt.Sprint(out)
}

// TestScreenRefusesDataConditions: rule sets whose conditions can read a window's bytes
// without any string match (modules, entrypoint, reads at computed addresses) are not
// screened; reads at a number, at a match offset or through another read are.
func TestScreenRefusesDataConditions(t *testing.T) {
	for _, tc := range []struct {
		cond string
		ok   bool
	}{
		{`$a`, true},
		{`uint16(0) == 0x5A4D and $a`, true},
		{`int16(uint32(0x3C) + 0x5c) == 0x0001 and $a`, true},
		{`for all i in (1..#a) : (uint8(@a[i] + 4) == 0x41)`, true},
		{`uint32be(filesize - 4) == 1 or $a`, true},
		{`uint8(!a[1]) == 0 or $a`, true},
		{`for any i in (0..4) : (uint8(i) == 0x41) or $a`, false},
		{`uint16(#a) == 0x4141`, false},
		{`uint16(0x10 + 2) == 0x4141 or $a`, false},
		{`$a at entrypoint`, false},
	} {
		dir := writeRules(t, map[string]string{"a.yar": `rule r { strings: $a = "AAAA" condition: ` + tc.cond + ` }`})
		r, err := Compile(dir)
		if err != nil && !errors.Is(err, ErrNoRules) {
			var ce *CompileError
			if !errors.As(err, &ce) || len(ce.Left) > 0 {
				t.Fatalf("%s: %v", tc.cond, err)
			}
		}
		if r.screen != tc.ok {
			t.Errorf("%s: screened %v, want %v", tc.cond, r.screen, tc.ok)
		}
		s, err := r.NewMemoryScanner(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Screen([][]byte{make([]byte, 64), make([]byte, 64)}, []uint64{0x1000, 0x2000})
		if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, memscan.ErrNoScreen) {
			t.Errorf("%s: Screen: %v", tc.cond, err)
		}
		s.Close()
	}
	// A global rule whose condition is not monotone turns the shortcut off.
	dir := writeRules(t, map[string]string{"a.yar": `global rule g { strings: $a = "A" condition: not $a } rule r { strings: $a = "B" condition: $a }`})
	if r, err := Compile(dir); err != nil || !r.screen || r.shortcut {
		t.Errorf("non-monotone global rule: screened %v, shortcut %v, %v", r != nil && r.screen, r != nil && r.shortcut, err)
	}
	// An import anywhere, or an include from outside the folder, turns the screen off.
	dir = writeRules(t, map[string]string{"a.yar": `import "math" rule r { strings: $a = "AAAA" condition: $a }`})
	if r, err := Compile(dir); err != nil || r.screen {
		t.Errorf("import: screened %v, %v", r != nil && r.screen, err)
	}
	out := writeRules(t, map[string]string{"x.yar": `rule x { condition: uint8(0x10 + 1) == 0 }`})
	dir = writeRules(t, map[string]string{"a.yar": fmt.Sprintf(`include %q rule r { strings: $a = "AAAA" condition: $a }`, filepath.Join(out, "x.yar"))})
	if r, err := Compile(dir); err != nil || r.screen {
		t.Errorf("include from outside: screened %v, %v", r != nil && r.screen, err)
	}
}

// FuzzScreen: whatever the windows' bytes, a window the screen passes reports alone what
// every other passed window reports, with no string match. data fills n overlapping
// windows of 1 KiB (+128 overlap) in turn; the rules' strings are short and drawn from a
// small alphabet, so that fuzzed bytes hit them.
func FuzzScreen(f *testing.F) {
	const win, ov = 1024, 128
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.yar"), []byte(`
rule lit { strings: $a = "ABAB" condition: $a }
rule fw { strings: $a = "BAB" fullword condition: $a }
rule widenc { strings: $a = "AB" wide nocase $b = "ZZZZ" condition: $a and not $b }
rule cnt { strings: $a = "AA" condition: #a == 2 }
rule cnt3 { strings: $a = "ZBZ" condition: #a >= 3 }
rule pair { strings: $a = "AZA" $b = "BZB" condition: all of them }
rule re { strings: $a = /B[AZ]{2,30}B/ condition: $a }
rule anch { strings: $a = /^A[ABZ]{100,200}/ condition: $a }
rule hexj { strings: $a = { 41 5A [0-8] 5A 41 } condition: $a }
rule chain { strings: $a = { 42 42 [200-300] 5A 5A } condition: $a }
rule at0 { strings: $a = "ZAZ" condition: $a at 0x4001fe }
rule hdr { strings: $a = "BA" condition: uint8(0x400400) == 0x41 and $a }
rule absent { strings: $a = "AAZZBB" condition: not $a }
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
	f.Add(uint8(5), []byte("BB ZBZ AZA..........ZZ BZB AAZZBB"))
	f.Fuzz(func(t *testing.T, n uint8, data []byte) {
		k := 2 + int(n)%6
		if len(data) == 0 {
			return
		}
		mem := make([]byte, k*win+ov)
		for i := range mem {
			mem[i] = data[i%len(data)]
		}
		wins := make([][]byte, k)
		bases := make([]uint64, k)
		for i := range k {
			wins[i] = mem[i*win : (i+1)*win+ov]
			bases[i] = 0x400000 + uint64(i*win)
		}
		hit, err := s.Screen(wins, bases)
		if err != nil {
			t.Fatal(err)
		}
		quiet := "none"
		for i := range k {
			ms, err := s.Scan(wins[i], bases[i])
			if err != nil {
				t.Fatal(err)
			}
			if hit[i] {
				continue
			}
			for _, m := range ms {
				if len(m.Strings) > 0 {
					t.Fatalf("window %d passed by the screen: alone %s matches %s", i, m.Rule, m.Strings[0].Name)
				}
			}
			if got := names(ms); quiet == "none" {
				quiet = got
			} else if got != quiet {
				t.Fatalf("window %d passed by the screen: alone %s, another passed window %s", i, got, quiet)
			}
		}
	})
}
