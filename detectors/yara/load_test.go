package yara

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// publicSets are the public rule sets kept beside the repository (never copied into it):
// ../shared/corpora/yara-rules/NAME/yara from the repository root.
var publicSets = []string{"signature-base", "reversinglabs", "elastic-protections-artifacts"}

func publicSet(t testing.TB, name string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "corpora", "yara-rules", name, "yara")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("public rule set %s not found at %s: %v", name, dir, err)
	}
	return dir
}

// TestPublicRuleSetsLoad: signature-base uses the owner external that Loki and THOR
// define (yara_mixed_ext_vars.yar:384); every file of the three sets must load, and each
// file must compile with yarac given the same externals.
func TestPublicRuleSetsLoad(t *testing.T) {
	for _, name := range publicSets {
		t.Run(name, func(t *testing.T) {
			dir := publicSet(t, name)
			r, err := Compile(dir)
			if err != nil {
				t.Fatalf("%s does not load: %v", name, err)
			}
			files, _ := ListFiles(dir)
			if len(r.Files()) != len(files) || r.Count() < 1000 {
				t.Fatalf("loaded %d of %d files, %d rules", len(r.Files()), len(files), r.Count())
			}
			t.Logf("%s: %d rules in %d files, %d window-dependent rules", name, r.Count(), len(r.Files()), len(r.WindowRules()))
		})
	}
}

// yaracErrors runs yarac on one file with the externals defined and returns its errors
// as "FILE:LINE: TEXT" (yarac prints `error: [rule "R" in ]FILE(LINE): TEXT`).
func yaracErrors(t *testing.T, dir, rel string) []string {
	t.Helper()
	yarac, err := exec.LookPath("yarac")
	if err != nil {
		t.Fatal("yarac not installed (Debian package yara): ", err)
	}
	args := []string{}
	for k := range Externals {
		args = append(args, "-d", k+"=")
	}
	cmd := exec.Command(yarac, append(args, rel, filepath.Join(t.TempDir(), "out.yarc"))...)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	re := regexp.MustCompile(`^error: (?:rule "[^"]*" in )?(.*)\((\d+)\): (.*)$`)
	var errs []string
	for _, l := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			errs = append(errs, fmt.Sprintf("%s:%s: %s", m[1], m[2], m[3]))
		}
	}
	return errs
}

// TestBrokenFilesLeftOutRestLoads: one broken file must not refuse the folder; the good
// files load, and each broken file's errors are yarac's, line for line.
func TestBrokenFilesLeftOutRestLoads(t *testing.T) {
	dir := writeRules(t, map[string]string{
		"good.yar":        "rule ok { strings: $a = \"GOOD-MARK\" condition: $a }\n",
		"ext.yar":         "rule uses_owner { condition: owner == \"root\" and md5 == \"\" }\n",
		"bad_string.yar":  "rule x {\n  strings:\n    $a = \"x\"\n  condition:\n    $b\n}\n",
		"bad_ident.yar":   "\n\nrule y { condition: nosuchthing }\n",
		"bad_regexp.yar":  "rule f { strings: $a = /ab(/ condition: $a }\nrule f { condition: true }\n",
		"bad_include.yar": "include \"missing.yar\"\nrule z { condition: true }\n",
		"sub/dup.yar":     "rule g { strings: $a = \"abc\" condition: $a }\nrule g { condition: true }\n",
	})
	r, err := Compile(dir)
	var ce *CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a *CompileError", err)
	}
	if r == nil {
		t.Fatal("nothing loaded: one broken file refused the whole folder")
	}
	if got := strings.Join(r.Files(), ","); got != "ext.yar,good.yar" {
		t.Errorf("loaded files = %s, want ext.yar,good.yar", got)
	}
	if got := strings.Join(ce.Left, ","); got != "bad_ident.yar,bad_include.yar,bad_regexp.yar,bad_string.yar,sub/dup.yar" {
		t.Errorf("left out = %s", got)
	}
	s, err := r.NewScanner(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms, err := s.Scan([]byte("xx GOOD-MARK xx"))
	if err != nil || len(ms) != 1 || ms[0].Rule != "ok" {
		t.Fatalf("scan with the loaded rules = %v, %v", ms, err)
	}
	var got []string
	for _, e := range ce.Errors {
		got = append(got, e.Error())
	}
	var want []string
	for _, f := range ce.Left {
		want = append(want, yaracErrors(t, dir, f)...)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors differ from yarac's:\n got:\n  %s\n yarac:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestIncludedFileCompiledOnce: an index file that includes sub/common.yar makes the
// common rules part of the index's namespace only, not a second namespace as well.
func TestIncludedFileCompiledOnce(t *testing.T) {
	dir := writeRules(t, map[string]string{
		"index.yar":        "include \"sub/common.yar\"\ninclude \"other.yar\"\nrule idx { condition: false }\n",
		"other.yar":        "rule other { strings: $a = \"OTHER-MARK\" condition: $a }\n",
		"sub/common.yar":   "include \"helpers.yar\"\nrule common { strings: $a = \"COMMON-MARK\" condition: $a and helper }\n",
		"sub/helpers.yar":  "private rule helper { condition: true }\n",
		"standalone.yara":  "rule alone { strings: $a = \"COMMON-MARK\" condition: $a }\n",
		"comment_only.yar": "// include \"other.yar\"\n/* include \"other.yar\" */\nrule c { strings: $s = \"include \\\"other.yar\\\"\" condition: $s }\n",
	})
	r, err := Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Files(), ","); got != "comment_only.yar,index.yar,standalone.yara" {
		t.Errorf("files compiled on their own = %s", got)
	}
	if got := r.Included()["sub/common.yar"]; len(got) != 1 || got[0] != "index.yar" {
		t.Errorf("Included()[sub/common.yar] = %v", got)
	}
	s, err := r.NewScanner(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms, err := s.Scan([]byte("COMMON-MARK OTHER-MARK"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Namespace+":"+m.Rule)
	}
	sort.Strings(got)
	if strings.Join(got, " ") != "index:common index:other standalone:alone" {
		t.Errorf("matches = %v, want each rule once: index:common index:other standalone:alone", got)
	}
}

// TestIncludeLoopReported: files that include each other, with no file above them, are
// compiled (so that libyara reports the loop) and left out; the rest loads.
func TestIncludeLoopReported(t *testing.T) {
	dir := writeRules(t, map[string]string{
		"ok.yar":     "rule ok { condition: true }\n",
		"loop/a.yar": "include \"b.yar\"\nrule la { condition: false }\n",
		"loop/b.yar": "include \"a.yar\"\nrule lb { condition: false }\n",
	})
	r, err := Compile(dir)
	var ce *CompileError
	if !errors.As(err, &ce) || r == nil || r.Count() != 1 {
		t.Fatalf("err = %v, r = %v: want the loop reported and ok.yar loaded", err, r)
	}
	if got := strings.Join(ce.Left, ","); got != "loop/a.yar,loop/b.yar" {
		t.Errorf("left out = %s, want the include loop", got)
	}
	if len(ce.Errors) == 0 || !strings.Contains(ce.Errors[0].Text, "circular") {
		t.Errorf("errors = %v", ce.Errors)
	}
}

// TestSlowRuleNamedAndProfiled (issue 8 item 10): a scan that hits the time limit says
// so (Timeout true), Profile over that window ranks rule files by cost and names the
// file that timed out, and the compiler's slow-string warnings are listed.
func TestSlowRuleNamedAndProfiled(t *testing.T) {
	dir := writeRules(t, map[string]string{
		"fast.yar":       "rule fast { strings: $a = \"FAST-MARK\" condition: $a }\n",
		"slow.yar":       "rule slow { condition: for any i in (0x10000..0x1ffff) : (for any j in (0..4000) : (uint8(i+j) == 0x42)) }\n",
		"slowstring.yar": "rule loose { strings: $a = { 00 ?? } condition: $a }\n",
	})
	r, err := Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if w := r.SlowWarnings(); len(w) != 1 || w[0].File != "slowstring.yar" || w[0].Line != 1 {
		t.Errorf("slow warnings = %v", w)
	}
	sample := make([]byte, 64<<10)
	for i := range sample {
		sample[i] = 0x41
	}
	s, err := r.NewMemoryScanner(time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Scan(sample, 0x10000)
	var to interface{ Timeout() bool }
	if !errors.As(err, &to) || !to.Timeout() {
		t.Fatalf("scan error = %v, want a timeout", err)
	}
	// libyara 4.2.3 names no rule for a timeout in a condition: Profile over the window
	// that timed out finds the file.
	costs, err := r.Profile(sample, 0x10000, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(costs) != 3 || costs[0].File != "slow.yar" || costs[0].Err == nil || costs[0].Time < 900*time.Millisecond {
		t.Fatalf("costs = %+v, want slow.yar first, timed out", costs)
	}
	for _, c := range costs[1:] {
		if c.Err != nil || c.Time > costs[0].Time/3 {
			t.Errorf("cost %+v", c)
		}
	}
}
