package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/vmtest"
)

// domainm runs the CLI as a child process and returns stdout, stderr and the exit code.
func domainm(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "DOMAINM_CLI_CHILD=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("running domainm %v: %v", args, err)
	return "", "", -1
}

// TestScanMemoryLiveVM boots a real QEMU VM whose 3 GiB of RAM live in a shared file (q35
// splits it: 2 GiB at address 0, 1 GiB at 4 GiB), plants strings at known guest-physical
// addresses, checks that the guest itself sees them there (QEMU's "xp"), and checks that
// `domainm scan-memory` reports every one of them at exactly that address.
func TestScanMemoryLiveVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	const ram = 3 << 30
	vm := vmtest.Start(t, vmtest.Config{Machine: "q35", Memory: ram})
	t.Logf("VM running with %s, RAM file %s", vm.Accel, vm.RAMFile)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// q35 with >= 2.75 GiB: file offsets below 2 GiB are GPA = offset, the rest is at 4 GiB.
	const low = 2 << 30
	fileOffset := func(gpa uint64) int64 {
		if gpa >= 4<<30 {
			return int64(gpa - 4<<30 + low)
		}
		return int64(gpa)
	}
	bs := uint64(memscan.DefaultBlockSize)
	planted := map[uint64]string{
		0x10000010:         "DOMAINM-E2E-inside-low-ram",
		0x20000000 - 9:     "DOMAINM-E2E-straddles-a-block-boundary", // 512 MiB is a block boundary
		7*bs - 1:           "DOMAINM-E2E-one-byte-before-boundary",
		4<<30 + 3*bs + 100: "DOMAINM-E2E-above-4-GiB",
		5<<30 - 40:         "DOMAINM-E2E-near-the-end-of-RAM", // RAM ends at 5 GiB
	}
	for gpa, s := range planted {
		if err := vm.WriteRAM(fileOffset(gpa), []byte(s)); err != nil {
			t.Fatal(err)
		}
		got, err := vm.ReadPhys(ctx, gpa, len(s))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != s {
			t.Fatalf("guest sees %q at %#x, planted %q", got, gpa, s)
		}
	}

	rules := t.TempDir()
	os.WriteFile(filepath.Join(rules, "e2e.yar"), []byte(`
rule planted : test { meta: description = "planted by the test" strings: $s = /DOMAINM-E2E-[A-Za-z0-9-]+/ condition: $s }
`), 0o644)
	out, errOut, code := domainm(t, "scan-memory", "--source", "file:"+vm.RAMFile, "--layout", "q35", "--rules", rules, "--json")
	if code != ExitFindings {
		t.Fatalf("exit %d, want 1; stderr: %s", code, errOut)
	}
	f := decodeFinding(t, []byte(strings.TrimSpace(out)))
	if f.Rule != "planted" || f.Namespace != "e2e" || f.Detector != "yara-memory" || len(f.Tags) != 1 || f.Meta["description"] == "" {
		t.Errorf("finding = %+v", f)
	}
	got := map[uint64]string{}
	for _, m := range f.Matches {
		got[m.Offset] = m.Text
	}
	for gpa, s := range planted {
		if got[gpa] != s {
			t.Errorf("at %#x: reported %q, planted %q", gpa, got[gpa], s)
		}
	}
	if len(got) != len(planted) {
		t.Errorf("reported %d addresses, planted %d: %v", len(got), len(planted), fmt.Sprint(got))
	}

	// The same guest with nothing to find exits 0; a broken rule exits 2 naming file:line.
	clean := t.TempDir()
	os.WriteFile(filepath.Join(clean, "none.yar"), []byte(`rule nothing { strings: $s = "NOT-IN-THIS-GUEST-1234" condition: $s }`), 0o644)
	if _, errOut, code := domainm(t, "scan-memory", "--source", "file:"+vm.RAMFile, "--layout", "q35", "--rules", clean); code != ExitClean {
		t.Errorf("clean scan exit %d: %s", code, errOut)
	}
	os.WriteFile(filepath.Join(clean, "broken.yar"), []byte("rule x {\n condition: nosuch\n}\n"), 0o644)
	_, errOut, code = domainm(t, "scan-memory", "--source", "file:"+vm.RAMFile, "--rules", clean)
	if code != ExitError || !strings.Contains(errOut, "broken.yar:") {
		t.Errorf("broken rules: exit %d, stderr %q", code, errOut)
	}
}

func TestRulesCheck(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ok.yar"), []byte("rule ok { condition: true }\n"), 0o644)
	out, _, code := domainm(t, "rules", "check", dir)
	if code != 0 || !strings.Contains(out, "1 rules in 1 files OK") {
		t.Fatalf("exit %d: %s", code, out)
	}
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "bad.yara"), []byte("\nrule bad { strings: $a = \"x\" condition: $b }\n"), 0o644)
	out, _, code = domainm(t, "rules", "check", dir)
	if code != 2 || !strings.Contains(out, dir+"/sub/bad.yara:2: error: undefined string") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for name := range commands {
		args := append(strings.Fields(name), "--help")
		out, _, code := domainm(t, args...)
		if code != 0 || !strings.Contains(out, "Usage: domainm") {
			t.Errorf("%s --help: exit %d, output %q", name, code, out)
		}
	}
	if _, _, code := domainm(t, "no-such-command"); code != ExitUsage {
		t.Errorf("unknown command exit %d", code)
	}
}
