package cli

import (
	"regexp"
	"strings"
	"testing"
)

// TestUsageExit runs the domainm binary with command lines that cannot be parsed: each
// prints one line naming the flag as --flag with a pointer to --help, and exits 64
// (ExitUsage, as domainm-migrate); every command's --help lists its options as --flag
// and its exit codes, 64 included.
func TestUsageExit(t *testing.T) {
	for _, args := range [][]string{
		{"status", "--bogus"}, {"alert", "test", "--timeout"}, {"alert", "test", "--timeout", "soon"},
		{"version", "stray"}, {"no-such-command"}, {"run", "-x"},
	} {
		out, errOut, code := runDomainm(t, args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != ExitUsage || len(lines) != 1 || !strings.Contains(lines[0], "--help") || out != "" {
			t.Errorf("%q: exit %d, stderr %q, stdout %q; want %d and one line pointing at --help", args, code, errOut, out, ExitUsage)
		}
		if regexp.MustCompile(`(^|[ (])-[a-z]`).MatchString(strings.ReplaceAll(lines[0], "--", "")) && args[0] != "run" {
			t.Errorf("%q: a flag shown with one dash: %q", args, lines[0])
		}
	}
	if _, errOut, _ := runDomainm(t, "status", "--bogus"); !strings.Contains(errOut, "unknown flag --bogus (see domainm status --help)") {
		t.Errorf("status --bogus: %q", errOut)
	}
	for name := range commands {
		out, _, code := runDomainm(t, append(strings.Fields(name), "--help")...)
		if code != ExitClean || !strings.Contains(out, "Exit codes:") || !strings.Contains(out, "64") {
			t.Errorf("%s --help: exit %d, no exit codes with 64:\n%s", name, code, out)
		}
		if m := regexp.MustCompile(`(?m)^  -[a-z]`).FindString(out); m != "" {
			t.Errorf("%s --help shows a flag with one dash: %q", name, m)
		}
	}
}
