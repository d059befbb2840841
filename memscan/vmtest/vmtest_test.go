//go:build linux

package vmtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFirmwareVM boots a firmware-only VM (KVM when it works here, else TCG) and
// checks control over QMP and that a write to the RAM file is what the guest sees.
func TestFirmwareVM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vm := Start(t, Config{Memory: 64 << 20})
	t.Logf("accelerator %s, pid %d", vm.Accel, vm.PID())
	if vm.Accel != "kvm" && vm.Accel != "tcg" {
		t.Fatalf("accelerator %q", vm.Accel)
	}
	if st, err := vm.Status(ctx); err != nil || st != "running" {
		t.Fatalf("status = %q, %v; want running", st, err)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := vm.Status(ctx); st != "paused" {
		t.Fatalf("status after stop = %q", st)
	}
	want := []byte("VMTEST-XP-CHECK")
	const gpa = 0x2345670
	if err := vm.WriteRAM(gpa, want); err != nil {
		t.Fatal(err)
	}
	got, err := vm.ReadPhys(ctx, gpa, len(want))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("xp %#x = %q, want %q", gpa, got, want)
	}
	if _, err := vm.HMP(ctx, "no-such-command"); err != nil {
		t.Logf("bad HMP command: %v", err) // HMP reports errors in its output text
	}
	if err := vm.Execute(ctx, "no-such-command", nil, nil); err == nil {
		t.Fatal("unknown QMP command succeeded")
	}
	if err := vm.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	pid, ram := vm.PID(), vm.RAMFile
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("QEMU pid %d still alive after Close", pid)
	}
	if _, err := os.Stat(ram); !os.IsNotExist(err) {
		t.Fatalf("RAM file %s left behind: %v", ram, err)
	}
}

// TestForcedTCGPaused checks the explicit accelerator and -S.
func TestForcedTCGPaused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vm := Start(t, Config{Memory: 32 << 20, Accel: "tcg", Paused: true, Machine: "pc"})
	if st, err := vm.Status(ctx); err != nil || st != "prelaunch" {
		t.Fatalf("status = %q, %v; want prelaunch", st, err)
	}
	var kvm struct{ Enabled bool }
	if err := vm.Execute(ctx, "query-kvm", nil, &kvm); err != nil || kvm.Enabled {
		t.Fatalf("query-kvm enabled=%v err=%v under forced TCG", kvm.Enabled, err)
	}
}

func TestParseXP(t *testing.T) {
	out := "0000000002345670: 0x56 0x4d 0x54 0x45 0x53 0x54 0x2d 0x58\r\n0000000002345678: 0x50\r\n"
	got, err := parseXP(out)
	if err != nil || string(got) != "VMTEST-XP" {
		t.Fatalf("parseXP = %q, %v", got, err)
	}
	if _, err := parseXP("Invalid parameter"); err == nil {
		t.Fatal("parseXP accepted an error message")
	}
}

// TestBuildInitramfs checks the archive with the real cpio tool.
func TestBuildInitramfs(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "initrd.cpio")
	if err := BuildInitramfs(dst, "echo hello", map[string][]byte{"etc/marker": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("cpio", "-it", "--quiet", "-F", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v: %s", err, out)
	}
	list := string(out)
	for _, want := range []string{"bin/busybox", "init", "etc/marker", "proc"} {
		if !strings.Contains(list, want+"\n") {
			t.Errorf("%s missing from archive listing:\n%s", want, list)
		}
	}
}

func TestParseXPNoMemory(t *testing.T) {
	_, err := parseXP("0000000080100000: Cannot access memory\r\n")
	if !errors.Is(err, ErrNotMemory) {
		t.Fatalf("err = %v, want ErrNotMemory", err)
	}
}

// TestBuildInitramfsNestedParents unpacks with cpio -i without -d, which like the kernel's
// unpacker does not create missing parents: nested files need their folders listed first.
func TestBuildInitramfsNestedParents(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "initrd.cpio")
	extra := map[string][]byte{"a/b/c/first": []byte("1"), "a/b/second": []byte("2")}
	if err := BuildInitramfs(dst, "true", extra); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-i", "--quiet", "-F", dst)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	for name, want := range extra {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
}
