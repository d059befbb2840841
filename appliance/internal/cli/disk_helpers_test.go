package cli

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
	"github.com/domainm/domainm/image/testenv"
)

// Test images for the disk commands: a small Linux-like tree put into ext4 with
// mkfs.ext4 -d, changed with debugfs -w (never mounted; diskscan/ext4test), then wrapped into a layout
// (bare, MBR with the filesystem in a logical partition, GPT) and a format (raw, qcow2).

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
	w := func(p string, data []byte, mode uint32) {
		ext4test.WriteFile(t, g.dir, p, data, mode)
		if err := os.Chtimes(filepath.Join(g.dir, p), old, old); err != nil {
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
		testenv.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk, q)
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
