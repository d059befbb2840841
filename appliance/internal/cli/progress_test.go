package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestProgressBarOnlyOnTerminal runs scan-memory under a pseudo-terminal (script(1)) and
// through a pipe: a person at a terminal sees a progress bar, a script reading the output
// does not.
func TestProgressBarOnlyOnTerminal(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "mem.raw")
	if err := os.WriteFile(img, []byte(strings.Repeat("x", 4096)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(dir, "rules")
	os.Mkdir(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "r.yar"), []byte(`rule r { strings: $a = "xxxx" condition: $a }`), 0o644)
	args := []string{"scan-memory", "--source", "file:" + img, "--rules", rules}

	// Through a pipe: no bar.
	_, errOut, code := domainm(t, args...)
	if code != ExitFindings || strings.Contains(errOut, "scanning file:") {
		t.Fatalf("piped: exit %d, stderr %q", code, errOut)
	}

	// Under a terminal: the bar is drawn on stderr.
	line := "DOMAINM_CLI_CHILD=1 " + shellQuote(os.Args[0])
	for _, a := range args {
		line += " " + shellQuote(a)
	}
	out, err := exec.Command("script", "-qec", line, "/dev/null").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == ExitFindings) {
		t.Fatalf("script: %v: %s", err, out)
	}
	if s := string(out); !strings.Contains(s, "scanning file:"+img) || !strings.Contains(s, "%") || !strings.Contains(s, "FOUND r:r") {
		t.Fatalf("no progress bar on a terminal:\n%q", s)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
