package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runInspectCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}, append([]string{"inspect"}, args...))
	return code, out.String(), errb.String()
}

func TestInspectUsage(t *testing.T) {
	code, out, _ := runInspectCLI("--help")
	if code != ExitClean || !strings.Contains(out, "kallsyms") || !strings.Contains(out, "BTF") || !strings.Contains(out, "Exit codes:\n  0   described") {
		t.Errorf("--help: exit %d, %q", code, out)
	}
	if code, _, errs := runInspectCLI(); code != ExitError || !strings.Contains(errs, "--source is required") {
		t.Errorf("no --source: exit %d, %q", code, errs)
	}
	// Memory with no Linux kernel in it: exit 2 and say what is missing.
	ram := filepath.Join(t.TempDir(), "ram")
	if err := os.WriteFile(ram, bytes.Repeat([]byte("not a kernel "), 1<<16), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runInspectCLI("--source", "file:"+ram, "--json"); code != ExitError || !strings.Contains(errs, "no kallsyms tables found") {
		t.Errorf("no kernel: exit %d, %q", code, errs)
	}
}
