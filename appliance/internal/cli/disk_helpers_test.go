package cli

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Test images for the disk commands: a small Linux-like tree put into ext4 with
// mkfs.ext4 -d, changed with debugfs -w (never mounted), then wrapped into a layout
// (bare, MBR with the filesystem in a logical partition, GPT) and a format (raw, qcow2).

// diskRun runs an external tool; a missing tool fails the test (make deps installs it).
func diskRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not installed (make deps installs it): %v", name, err)
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// debugfs runs debugfs -w commands on a filesystem image.
func diskDebugfs(t testing.TB, img string, cmds ...string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(f, []byte(strings.Join(cmds, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := diskRun(t, "debugfs", "-w", "-f", f, img)
	for _, l := range strings.Split(out, "\n") {
		// debugfs reports command errors on its output but exits 0.
		if strings.Contains(l, ": ") && !strings.HasPrefix(l, "debugfs") && !strings.HasPrefix(l, "Allocated inode") {
			t.Fatalf("debugfs %v: %s", cmds, out)
		}
	}
}

// fsck checks and repairs an image after debugfs edits; 1 means "fixed", fine.
func diskFsck(t testing.TB, img string) {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fy", img).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() > 1) {
		t.Fatalf("e2fsck -fy %s: %v\n%s", img, err, out)
	}
}

var diskReInode = regexp.MustCompile(`Inode:\s+(\d+)`)

// inodeOf asks debugfs for a path's inode number.
func diskInodeOf(t testing.TB, img, p string) uint64 {
	t.Helper()
	out := diskRun(t, "debugfs", "-R", "stat "+p, img)
	m := diskReInode.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs stat %s: %s", p, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// diskOverwrite changes the first bytes of a file's first data block directly in
// the image, as an attacker with raw disk access would: size, mtime and ctime stay.
func diskOverwrite(t testing.TB, img, p string, data []byte) {
	t.Helper()
	out := diskRun(t, "debugfs", "-R", "blocks "+p, img)
	fields := strings.Fields(strings.TrimSpace(diskLastLine(out)))
	if len(fields) == 0 {
		t.Fatalf("no blocks for %s: %q", p, out)
	}
	blk, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		t.Fatalf("blocks %s: %q", p, out)
	}
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, blk*4096); err != nil {
		t.Fatal(err)
	}
}

func diskLastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// diskTree is the test filesystem's content, as the test wrote it.
type diskTree struct {
	dir   string
	files map[string][]byte
}

const diskEvilMarker = "DOMAINM-TEST-EVIL-MARKER"

func makeDiskTree(t testing.TB) *diskTree {
	t.Helper()
	g := &diskTree{dir: t.TempDir(), files: map[string][]byte{}}
	rnd := rand.New(rand.NewSource(3))
	rb := func(n int) []byte { b := make([]byte, n); rnd.Read(b); return b }
	old := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	w := func(p string, data []byte, mode os.FileMode) {
		full := filepath.Join(g.dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, mode); err != nil {
			t.Fatal(err)
		}
		// syscall.Chmod takes the raw bits: os.Chmod(0o4755) would drop the setuid bit
		// (os.FileMode spells it os.ModeSetuid).
		if err := syscall.Chmod(full, uint32(mode)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, old, old); err != nil {
			t.Fatal(err)
		}
		g.files[p] = data
	}
	w("usr/bin/tool", rb(8192), 0o755)
	w("usr/bin/ls", append(rb(3000), []byte(diskEvilMarker)...), 0o755) // unchanged: never YARA-scanned by check
	w("usr/bin/daemon", rb(5000), 0o755)
	w("usr/bin/elf", append([]byte("\x7fELF"), rb(500)...), 0o755)
	w("usr/bin/sudo", rb(6000), 0o4755)
	w("usr/lib/libx.so.1", rb(9000), 0o644)
	w("usr/lib/python3/__pycache__/m.pyc", rb(100), 0o644)
	w("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	w("etc/latin1-\xe9t\xe9", []byte("a name that is not UTF-8\n"), 0o644)
	w("etc/cron.d/old", []byte("* * * * * root true\n"), 0o644)
	w("etc/sudoers", []byte("root ALL=(ALL) ALL\n"), 0o440)
	w("home/al/.ssh/authorized_keys", []byte("ssh-ed25519 AAAA al@host\n"), 0o600)
	w("var/log/syslog", []byte("boot\n"), 0o640)
	w("tmp/scratch", rb(100), 0o644)
	diskMust(t, os.Link(filepath.Join(g.dir, "usr/lib/libx.so.1"), filepath.Join(g.dir, "usr/lib/libx.so")))
	diskMust(t, os.Symlink("/usr/bin/tool", filepath.Join(g.dir, "usr/bin/editor")))
	return g
}

func diskMust(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// diskMkfs builds a 4 KiB-block ext4 image of the tree.
func diskMkfs(t testing.TB, img, dir string, sizeMiB int) {
	t.Helper()
	diskRun(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", dir, "-E", "root_owner=0:0", img, fmt.Sprintf("%dM", sizeMiB))
}

// diskLayout wraps a filesystem image into a disk: "bare", "mbr" (in logical
// partition 5, behind an empty primary partition 1) or "gpt"; format "raw" or "qcow2".
// It returns the image path and the partition the filesystem is in (-1 for bare).
func diskLayout(t testing.TB, fsImg, layout, format string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	st, err := os.Stat(fsImg)
	diskMust(t, err)
	fsSectors := st.Size() / 512
	disk := filepath.Join(dir, "disk.raw")
	var startSector int64
	part := -1
	switch layout {
	case "bare":
		b, err := os.ReadFile(fsImg)
		diskMust(t, err)
		diskMust(t, os.WriteFile(disk, b, 0o600))
	case "mbr", "gpt":
		var script string
		if layout == "mbr" {
			startSector, part = 6144, 5
			script = fmt.Sprintf("label: dos\nstart=2048, size=2048, type=83\nstart=4096, type=5\nstart=%d, size=%d, type=83\n", startSector, fsSectors)
		} else {
			startSector, part = 2048, 1
			script = fmt.Sprintf("label: gpt\nstart=%d, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n", startSector, fsSectors)
		}
		diskMust(t, os.WriteFile(disk, nil, 0o600))
		diskMust(t, os.Truncate(disk, (startSector+fsSectors+4096)*512))
		cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", "-q", disk)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk: %v\n%s", err, out)
		}
		b, err := os.ReadFile(fsImg)
		diskMust(t, err)
		f, err := os.OpenFile(disk, os.O_WRONLY, 0)
		diskMust(t, err)
		_, err = f.WriteAt(b, startSector*512)
		diskMust(t, err)
		diskMust(t, f.Close())
	default:
		t.Fatalf("layout %q", layout)
	}
	if format == "qcow2" {
		q := filepath.Join(dir, "disk.qcow2")
		diskRun(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk, q)
		diskMust(t, os.Remove(disk))
		return q, part
	}
	return disk, part
}

// runCLI runs domainm in-process and returns exit code, stdout and stderr.
func diskCLI(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}, args)
	return code, out.String(), errb.String()
}
