// Package ext4test builds real ext4 images for tests, as net/http/httptest starts real
// servers: a file tree written to a temporary folder, mke2fs -d to put it into an
// image, debugfs -w to change the image afterwards (never mounted), e2fsck to repair
// it. diskscan reads these images; detectors/integrity, detectors/filescan and the
// appliance's disk commands check them.
//
// Every helper takes the test and fails it (with the tool's output) rather than
// returning an error. A missing tool fails the test too: `make deps` installs
// e2fsprogs.
package ext4test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/domainm/domainm/image/testenv"
)

// WriteFile writes data to rel under dir with exactly mode, making the parent folders.
// mode is the raw permission bits: setuid (0o4000), setgid (0o2000) and sticky
// (0o1000) are kept, and the umask does not apply.
func WriteFile(t testing.TB, dir, rel string, data []byte, mode uint32) {
	t.Helper()
	full := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, data, os.FileMode(mode&0o777)); err != nil {
		t.Fatal(err)
	}
	// syscall.Chmod, not os.Chmod: os.Chmod takes setuid/setgid only as os.ModeSetuid
	// and os.ModeSetgid and silently drops raw 0o4000/0o2000 bits.
	if err := syscall.Chmod(full, mode); err != nil {
		t.Fatal(err)
	}
}

// WriteTree writes files (path → content, mode 0644; a path ending in "/" makes a
// folder) under a new temporary folder and returns the folder.
func WriteTree(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, data := range files {
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		WriteFile(t, dir, p, []byte(data), 0o644)
	}
	return dir
}

// Mkfs builds the filesystem image img of sizeMiB MiB holding the tree dir:
// mke2fs -q -F -d dir -E root_owner=0:0, type ext4 unless opts hold a -t, then opts.
// opts must not hold -E (mke2fs keeps only the last).
func Mkfs(t testing.TB, img, dir string, sizeMiB int, opts ...string) {
	t.Helper()
	args := []string{"-q", "-F", "-d", dir, "-E", "root_owner=0:0"}
	if !slices.Contains(opts, "-t") {
		args = append(args, "-t", "ext4")
	}
	args = append(append(args, opts...), img, fmt.Sprintf("%dM", sizeMiB))
	testenv.Run(t, "mke2fs", args...)
}

// Image writes files as WriteTree does and builds a 4 KiB-block ext4 image of them
// with the extra mke2fs options; it returns the image's path, in a temporary folder.
func Image(t testing.TB, files map[string]string, sizeMiB int, opts ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.ext4")
	Mkfs(t, img, WriteTree(t, files), sizeMiB, append([]string{"-b", "4096"}, opts...)...)
	return img
}

// Debugfs runs debugfs -w commands on an image. debugfs reports a command's error on
// its output but exits 0, so any line that is not a banner fails the test.
func Debugfs(t testing.TB, img string, cmds ...string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(f, []byte(strings.Join(cmds, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := testenv.Run(t, "debugfs", "-w", "-f", f, img)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, ": ") && !strings.HasPrefix(l, "debugfs") && !strings.HasPrefix(l, "Allocated inode") {
			t.Fatalf("debugfs %v: %s", cmds, out)
		}
	}
}

// Fsck checks and repairs an image with e2fsck -fy and the extra flags (-D to index
// directories); exit status 1, "errors fixed", is success.
func Fsck(t testing.TB, img string, flags ...string) {
	t.Helper()
	testenv.MustHave(t, "e2fsck")
	args := append(append([]string{"-fy"}, flags...), img)
	out, err := exec.Command("e2fsck", args...).CombinedOutput()
	if code := exitCode(err); code > 1 {
		t.Fatalf("e2fsck %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var reInode = regexp.MustCompile(`Inode:\s+(\d+)`)

// Inode is the inode number of path p in the image, as debugfs stat says.
func Inode(t testing.TB, img, p string) uint64 {
	t.Helper()
	out := testenv.Run(t, "debugfs", "-R", "stat "+p, img)
	m := reInode.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs stat %s: %s", p, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// FirstBlock is the first data block of path p, as debugfs blocks lists it.
func FirstBlock(t testing.TB, img, p string) int64 {
	t.Helper()
	out := testenv.Run(t, "debugfs", "-R", "blocks "+p, img)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) == 0 {
		t.Fatalf("no blocks for %s: %q", p, out)
	}
	n, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		t.Fatalf("blocks %s: %q", p, out)
	}
	return n
}

// Patch writes data at byte off of the image, as an attacker with raw disk access
// would.
func Patch(t testing.TB, img string, off int64, data []byte) {
	t.Helper()
	testenv.WriteAt(t, img, off, data)
}

// Overwrite writes data over the first bytes of path p's first data block, directly in
// the image: size, mtime and ctime stay as they were.
func Overwrite(t testing.TB, img, p string, data []byte) {
	t.Helper()
	Patch(t, img, FirstBlock(t, img, p)*BlockSize(t, img), data)
}

// BlockSize is the image's block size, from its superblock (s_log_block_size).
func BlockSize(t testing.TB, img string) int64 {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [4]byte
	if _, err := f.ReadAt(b[:], 1024+24); err != nil {
		t.Fatalf("%s: reading the superblock: %v", img, err)
	}
	log := binary.LittleEndian.Uint32(b[:])
	if log > 6 {
		t.Fatalf("%s: s_log_block_size %d: not an ext4 superblock", img, log)
	}
	return 1024 << log
}

// exitCode is a finished command's exit status: 0 on success, 255 when it did not run.
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return 255
}
