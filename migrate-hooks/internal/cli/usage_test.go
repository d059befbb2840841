package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestUsageExit: a command line that cannot be parsed gives one line naming the flag
// as --flag and pointing at --help, and exit 64, as domainm does; --help lists the
// options as --flag.
func TestUsageExit(t *testing.T) {
	for _, args := range [][]string{{"migrate", "--bogus"}, {"migrate", "--timeout"}, {"version", "stray"}, {"no-such-command"}} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), Env{Stdout: &out, Stderr: &errb}, "domainm-migrate", args)
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if code != ExitUsage || len(lines) != 1 || !strings.Contains(lines[0], "--help") || out.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q, stdout %d bytes; want %d and one line pointing at --help", args, code, errb.String(), out.Len(), ExitUsage)
		}
	}
	var out, errb bytes.Buffer
	if code := Main(context.Background(), Env{Stdout: &out, Stderr: &errb}, "domainm-migrate", []string{"migrate", "--bogus"}); code != ExitUsage ||
		!strings.Contains(errb.String(), "unknown flag --bogus") {
		t.Errorf("exit %d: %q", code, errb.String())
	}
	out.Reset()
	if code := Main(context.Background(), Env{Stdout: &out, Stderr: &errb}, "domainm-migrate", []string{"migrate", "--help"}); code != ExitOK ||
		!strings.Contains(out.String(), "\n  --control ") || strings.Contains(out.String(), "\n  -control") {
		t.Errorf("migrate --help: exit %d, options not shown as --flag:\n%s", code, out.String())
	}
}
