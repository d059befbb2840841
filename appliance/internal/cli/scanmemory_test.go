package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/detectors"
)

// memFixture is a raw memory image and a rules folder.
type memFixture struct {
	img, rules string
}

func newMemFixture(t *testing.T, size int, plant map[int]string, rules string) memFixture {
	t.Helper()
	dir := t.TempDir()
	buf := make([]byte, size)
	for off, s := range plant {
		copy(buf[off:], s)
	}
	img := filepath.Join(dir, "mem.raw")
	if err := os.WriteFile(img, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "rules")
	os.Mkdir(rdir, 0o755)
	if err := os.WriteFile(filepath.Join(rdir, "test.yar"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	return memFixture{img: img, rules: rdir}
}

// scanJSON runs scan-memory --json and returns exit code, findings by rule and summary.
func (f memFixture) scanJSON(t *testing.T, args ...string) (int, map[string]detectors.Finding, map[string]any) {
	t.Helper()
	code, out, errb := diskCLI(t, append([]string{"scan-memory", "--source", "file:" + f.img, "--rules", f.rules, "--json", "--quiet"}, args...)...)
	fs := map[string]detectors.Finding{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		fd := decodeFinding(t, sc.Bytes())
		fs[fd.Rule] = fd
	}
	var sum map[string]any
	lines := strings.Split(strings.TrimSpace(errb), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatalf("exit %d, no summary on stderr: %q", code, errb)
	}
	return code, fs, sum
}

// yaraHits runs the yara CLI (-s) on the image as a file: string match offsets by rule.
func yaraHits(t *testing.T, rulesFile, img string) map[string][]uint64 {
	t.Helper()
	y, err := exec.LookPath("yara")
	if err != nil {
		t.Fatal("yara not installed (Debian package yara): ", err)
	}
	out, err := exec.Command(y, "-s", "-d", "filename=", "-d", "filepath=", "-d", "extension=", "-d", "filetype=", "-d", "md5=", "-d", "owner=", rulesFile, img).Output()
	if err != nil {
		t.Fatalf("yara: %v", err)
	}
	hits := map[string][]uint64{}
	rule := ""
	for _, l := range strings.Split(string(out), "\n") {
		if m := regexp.MustCompile(`^0x([0-9a-f]+):`).FindStringSubmatch(l); m != nil {
			v, _ := strconv.ParseUint(m[1], 16, 64)
			hits[rule] = append(hits[rule], v)
		} else if f := strings.Fields(l); len(f) == 2 {
			rule = f[0]
			hits[rule] = hits[rule][:0:0]
		}
	}
	return hits
}

func ruleNames[V any](m map[string]V) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestScanMemoryFileRulesInMemory (issue 9 item 12): rules about a file's size, header or
// offsets must not fire because a memory window is small or starts with "MZ". Memory is
// presented to YARA as yara -p presents a process: filesize undefined, positions are
// guest-physical addresses. Whatever domainm reports, yara reports on the image as a
// file too, whatever the block size.
func TestScanMemoryFileRulesInMemory(t *testing.T) {
	const rules = `
rule plain      { strings: $a = "EVIL-MARK" condition: $a }
rule mz_header  { strings: $a = "EVIL-MARK" condition: uint16(0) == 0x5A4D and $a }
rule small_file { strings: $a = "EVIL-MARK" condition: $a and filesize < 512KB }
rule at_zero    { strings: $mz = "MZ" $a = "EVIL-MARK" condition: $mz at 0 and $a }
rule counted    { strings: $a = "EVIL-MARK" condition: #a == 1 }
`
	// A window (block 1 at 256 KiB) starts with a PE header; the mark is in it.
	f := newMemFixture(t, 4<<20, map[int]string{0x40000: "MZ\x90\x00\x03", 0x41000: "EVIL-MARK"}, rules)
	yh := yaraHits(t, filepath.Join(f.rules, "test.yar"), f.img)
	for _, bs := range []string{"", "65536", "4194304"} {
		var args []string
		if bs != "" {
			args = []string{"--block-size", bs}
		}
		code, fs, sum := f.scanJSON(t, args...)
		if code != ExitFindings {
			t.Fatalf("block size %q: exit %d", bs, code)
		}
		if got := ruleNames(fs); got != "counted plain" {
			t.Errorf("block size %q: matched %s, want counted plain (window artefacts: mz_header, small_file, at_zero)", bs, got)
		}
		for r := range fs {
			if _, ok := yh[r]; !ok {
				t.Errorf("block size %q: %s matched in memory but not by yara on the image", bs, r)
			}
		}
		if !fs["counted"].WindowDependent || fs["plain"].WindowDependent {
			t.Errorf("window_dependent: counted %v, plain %v", fs["counted"].WindowDependent, fs["plain"].WindowDependent)
		}
		if sum["window_rules"] != float64(4) {
			t.Errorf("summary window_rules = %v, want 4", sum["window_rules"])
		}
		if m := fs["plain"].Matches; len(m) != 1 || m[0].Offset != 0x41000 {
			t.Errorf("plain matches = %+v, want one at 0x41000", m)
		}
	}
}

// TestScanMemoryReportsCutMatches (issue 9 item 11): at most --max-matches addresses are
// kept per rule and window, and the rest are counted, in --json (matches_cut per finding
// and in the summary) and in the text output. Kept plus cut is what yara -s reports.
func TestScanMemoryReportsCutMatches(t *testing.T) {
	plant := map[int]string{}
	for i := range 600 { // block 0
		plant[0x1000+i*256] = "CUT-MARK"
	}
	for i := range 400 { // block 1
		plant[0x40000+0x1000+i*256] = "CUT-MARK"
	}
	f := newMemFixture(t, 1<<20, plant, `rule many { strings: $a = "CUT-MARK" condition: $a }`)
	want := yaraHits(t, filepath.Join(f.rules, "test.yar"), f.img)["many"]
	if len(want) != 1000 {
		t.Fatalf("yara -s found %d, want 1000", len(want))
	}
	_, fs, sum := f.scanJSON(t)
	m := fs["many"]
	if len(m.Matches) != 2*256 || m.MatchesCut != 1000-2*256 {
		t.Errorf("default cap: %d addresses listed, %d cut; want 512 listed (256 per window), 488 cut", len(m.Matches), m.MatchesCut)
	}
	if sum["matches_cut"] != float64(488) || sum["max_matches_per_rule"] != float64(256) {
		t.Errorf("summary matches_cut = %v, max_matches_per_rule = %v", sum["matches_cut"], sum["max_matches_per_rule"])
	}
	_, fs, _ = f.scanJSON(t, "--max-matches", "1000")
	m = fs["many"]
	if m.MatchesCut != 0 || len(m.Matches) != 1000 {
		t.Fatalf("--max-matches 1000: %d listed, %d cut; want all 1000", len(m.Matches), m.MatchesCut)
	}
	for i, s := range m.Matches {
		if s.Offset != want[i] {
			t.Fatalf("address %d: %#x, yara %#x", i, s.Offset, want[i])
		}
	}
	code, out, errb := diskCLI(t, "scan-memory", "--source", "file:"+f.img, "--rules", f.rules, "--max-matches", "100")
	if code != ExitFindings || !strings.Contains(out, "and 800 more matches, not listed (cut)") || !strings.Contains(errb, "800 matches found but not listed") {
		t.Errorf("text output (exit %d) does not say 800 were cut:\n%s\n%s", code, out, errb)
	}
}

// TestScanMemoryUsesDaemonWindow (issue 8 item 11): scan-memory and the daemon scan with
// the same block size, overlap, time limit and match cap by default.
func TestScanMemoryUsesDaemonWindow(t *testing.T) {
	f := newMemFixture(t, 1<<20, map[int]string{0x100: "EVIL-MARK"}, `rule plain { strings: $a = "EVIL-MARK" condition: $a }`)
	_, _, sum := f.scanJSON(t)
	d := config.Default().Memory
	if sum["block_size"] != float64(d.BlockSize) || sum["overlap"] != float64(d.Overlap) || sum["max_matches_per_rule"] != float64(d.MaxMatchesPerRule) {
		t.Errorf("scan-memory window %v+%v, cap %v; daemon default %d+%d, cap %d",
			sum["block_size"], sum["overlap"], sum["max_matches_per_rule"], d.BlockSize, d.Overlap, d.MaxMatchesPerRule)
	}
	_, out, _ := diskCLI(t, "scan-memory", "--help")
	if !strings.Contains(out, "(default "+d.YaraTimeout.String()+")") {
		t.Errorf("--timeout default is not the daemon's memory.yara_timeout %v:\n%s", d.YaraTimeout, out)
	}
}

// TestRulesCheckLoadsRestAndFlagsWindowRules (issue 9 items 10 and 12, issue 8 item 10):
// rules check reports each broken file with FILE:LINE and exits 2, says the rest loads,
// warns about slow strings and lists the rules whose meaning depends on the memory window.
func TestRulesCheckLoadsRestAndFlagsWindowRules(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ok.yar"), []byte("rule ok { strings: $a = \"GOOD-MARK\" condition: $a }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "ext.yar"), []byte("rule thor { condition: owner == \"root\" and filetype == \"ELF\" }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bad.yar"), []byte("\nrule bad { strings: $a = \"x\" condition: $b }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "file.yar"), []byte("rule pe_small {\n strings: $a = \"x1y2\"\n condition: uint16(0) == 0x5A4D and filesize < 100KB and $a\n}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "slow.yar"), []byte("rule slow { strings: $a = { 00 ?? } condition: $a }\n"), 0o644)
	code, out, _ := diskCLI(t, "rules", "check", dir)
	for _, want := range []string{
		dir + "/bad.yar:2: error: undefined string \"$b\"",
		dir + "/file.yar:1: window: rule pe_small depends on the memory scan window: uint16(0), filesize",
		dir + "/slow.yar:1: warning: string \"$a\" may slow down scanning",
		"4 rules in 4 files load; 1 file(s) left out",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if code != ExitError {
		t.Errorf("exit %d, want 2", code)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// TestRulesCheckProfileNamesSlowFile (issue 8 item 10): rules check --profile times each
// file over a sample window and prints the slow one first, with its time.
func TestRulesCheckProfileNamesSlowFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "fast.yar"), []byte("rule fast { strings: $a = \"FAST-MARK\" condition: $a }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "slow.yar"), []byte("rule slow { condition: for any i in (0x100000000..0x100001fff) : (for any j in (0..200) : (uint8(i+j) == 0x42 and uint8(i) == 0x43)) }\n"), 0o644)
	code, out, errb := diskCLI(t, "rules", "check", dir, "--profile")
	lines := strings.Split(out, "\n")
	var first string
	for _, l := range lines {
		if strings.Contains(l, ": cost: ") {
			first = l
			break
		}
	}
	if code != ExitClean || !strings.HasPrefix(first, dir+"/slow.yar: cost: ") || !strings.Contains(out, dir+"/fast.yar: cost: ") {
		t.Errorf("exit %d, want slow.yar's cost first:\n%s\n%s", code, out, errb)
	}
}

// TestScanMemoryRunBudget (issue 15): --run-budget is the daemon's memory.run_budget
// (0s: runs of 32 windows, scan-memory's default); runs of any length find the same, and
// a budget outside 0s-1s or without a unit is a usage error.
func TestScanMemoryRunBudget(t *testing.T) {
	plant := map[int]string{0x3_0100: "EVIL-MARK", 0x14_1000 - 4: "EVIL-MARK", 0x7f_fff0: "EVIL-MARK"}
	f := newMemFixture(t, 8<<20, plant, `rule plain { strings: $a = "EVIL-MARK" condition: $a }`)
	for _, b := range []string{"0s", "1ms", "10ms", "1s"} {
		code, fs, _ := f.scanJSON(t, "--run-budget", b, "--attribute=false")
		var got []uint64
		for _, s := range fs["plain"].Matches {
			got = append(got, s.Offset)
		}
		sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
		g := fmt.Sprintf("%#x", got)
		if code != ExitFindings || g != "[0x30100 0x140ffc 0x7ffff0]" {
			t.Errorf("--run-budget %s: exit %d, addresses %s", b, code, g)
		}
	}
	for b, msg := range map[string]string{"2s": "--run-budget: expected a duration from 0s (no bound) to 1s, got 2s", "-1ms": "--run-budget: expected", "10": "needs a unit"} {
		code, _, errb := diskCLI(t, "scan-memory", "--source", "file:"+f.img, "--rules", f.rules, "--run-budget", b)
		if code != ExitUsage || !strings.Contains(errb, msg) {
			t.Errorf("--run-budget %s: exit %d, stderr lacks %q:\n%s", b, code, msg, errb)
		}
	}
}
