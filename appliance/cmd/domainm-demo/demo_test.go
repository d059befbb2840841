package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestDemo runs `make demo`'s two parts with a freshly built domainm, so the newcomer's
// first command keeps working.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	bin := filepath.Join(t.TempDir(), "domainm")
	if out, err := exec.Command("go", "build", "-o", bin, "../domainm").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := run(ctx, bin, "../../../rules/yara"); err != nil {
		t.Fatalf("part 1: %v", err)
	}
	if err := runDisk(ctx, bin, "../../../rules/yara"); err != nil {
		t.Fatalf("part 2: %v", err)
	}
}
