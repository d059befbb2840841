// Command demo is `make demo`. Part 1 boots a small Linux VM under QEMU whose RAM is a
// shared memory file, lets a process inside the guest hold a known "implant" string in
// memory, and runs `domainm scan-memory` on the guest's RAM from outside, with the shipped
// rules. Part 2 builds a small ext4 disk image, records a file-integrity baseline, lets an
// "attacker" change the image (a new setuid backdoor, a new root account), and runs
// `domainm check` on it, without mounting anything.
//
// Everything it starts is stopped when it exits, by pid.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/domainm/domainm/memscan/vmtest"
)

func main() {
	domainm := flag.String("domainm", "bin/domainm", "domainm binary")
	rules := flag.String("rules", "rules/yara", "rules folder")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, *domainm, *rules)
	if err == nil {
		err = runDisk(ctx, *domainm, *rules)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, domainm, rules string) error {
	kernel, err := vmtest.Kernel()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "domainm-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	id := make([]byte, 4)
	rand.Read(id)
	marker := "DOMAINM-DEMO-IMPLANT-" + hex.EncodeToString(id)
	// The guest keeps the marker in a tmpfs file (page cache) and in a running shell's
	// memory, then reports that it is ready and idles.
	script := fmt.Sprintf(`mount -t tmpfs tmpfs /tmp
m=$(echo %s | tr x x)
echo "$m" > /tmp/implant.txt
echo "guest: implant planted in /tmp/implant.txt and in a shell's memory"
echo DEMO-READY
while true; do sleep 1; : "$m"; done`, marker)
	initrd := filepath.Join(tmp, "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, script, nil); err != nil {
		return err
	}

	fmt.Printf("== booting a 256 MiB Linux guest (%s, TCG) with its RAM in a shared file\n", filepath.Base(kernel))
	vm, err := vmtest.Launch(ctx, vmtest.Config{
		Memory: 256 << 20, Kernel: kernel, Initrd: initrd,
		Append: "quiet panic=-1", Accel: "tcg", Timeout: 60 * time.Second,
	})
	if err != nil {
		return err
	}
	defer vm.Close()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := vm.WaitSerial(wctx, "DEMO-READY"); err != nil {
		return err
	}
	fmt.Printf("== guest is up (QEMU pid %d); its RAM is %s\n", vm.PID(), vm.RAMFile)
	fmt.Printf("== the guest planted %q; scanning its memory from outside:\n\n", marker)
	fmt.Printf("$ %s scan-memory --source file:%s --rules %s\n", domainm, vm.RAMFile, rules)
	cmd := exec.CommandContext(ctx, domainm, "scan-memory", "--source", "file:"+vm.RAMFile, "--rules", rules, "--name", "demo-guest")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err = cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		return err
	}
	fmt.Printf("\n== domainm exited %d (0 clean, 1 findings, 2 error)\n", code)
	if code != 1 {
		return fmt.Errorf("expected the planted implant to be found (exit 1), got exit %d", code)
	}
	fmt.Println("== part 1 passed: the implant was found in the guest's memory without touching the guest")
	return nil
}
