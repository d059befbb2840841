package integrity

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan"
)

// Test images are real ext4 filesystems made with mkfs.ext4 -d and changed with
// debugfs -w (never mounted), read through diskscan as the appliance reads them.

// allPolicy selects every path with every attribute but sha512.
const allPolicy = `version = 1
[[select]]
name = "all"
paths = ["/"]
attrs = ["content", "xattrs", "nlink"]
`

// runTool runs an external tool; a missing tool fails the test (make deps installs it).
func runTool(t testing.TB, name string, args ...string) string {
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

// mkfsTree writes files (path → content; a trailing "/" makes a directory) into a
// folder and builds a 4 KiB-block ext4 image of it with the extra mkfs options.
func mkfsTree(t testing.TB, files map[string]string, sizeMiB int, opts ...string) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for p, data := range files {
		full := filepath.Join(tree, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "fs.ext4")
	args := append([]string{"-q", "-F", "-b", "4096", "-d", tree, "-E", "root_owner=0:0"}, opts...)
	runTool(t, "mkfs.ext4", append(args, img, fmt.Sprintf("%dM", sizeMiB))...)
	return img
}

// debugfsW runs debugfs -w commands on an image; debugfs reports command errors on
// its output but exits 0, so any line that is not a banner fails the test.
func debugfsW(t testing.TB, img string, cmds ...string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(f, []byte(strings.Join(cmds, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runTool(t, "debugfs", "-w", "-f", f, img)
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, ": ") && !strings.HasPrefix(l, "debugfs") && !strings.HasPrefix(l, "Allocated inode") {
			t.Fatalf("debugfs %v: %s", cmds, out)
		}
	}
}

// firstBlock is the first data block of a path, as debugfs lists it.
func firstBlock(t testing.TB, img, p string) int64 {
	t.Helper()
	out := runTool(t, "debugfs", "-R", "blocks "+p, img)
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

// patchImage writes data at off in the image, as an attacker with raw disk access would.
func patchImage(t testing.TB, img string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// collectImage walks a bare filesystem image with the policy and returns its records.
// With cmp set, every record is also compared and the changes are returned.
func collectImage(t testing.TB, img string, p *Policy, cmp *Comparer) ([]*Record, []Change) {
	t.Helper()
	fsys, closer, err := diskscan.OpenVolumeFormat(img, "raw", -1)
	if err != nil {
		t.Fatalf("opening %s: %v", img, err)
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opt := Options{Workers: 2}
	if cmp != nil {
		opt.Baseline = cmp.Baseline
	}
	var recs []*Record
	var changes []Change
	_, err = Collect(ctx, fsys, p, opt, func(r *Record) error {
		recs = append(recs, r)
		if cmp != nil {
			if c := cmp.Add(r); c != nil {
				changes = append(changes, *c)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("collecting %s: %v", img, err)
	}
	if cmp != nil {
		changes = append(changes, cmp.Removed()...)
	}
	return recs, changes
}

// roundTrip writes records to a baseline DB and reads them back, as check does.
func roundTrip(t testing.TB, p *Policy, recs []*Record) []*Record {
	t.Helper()
	db := filepath.Join(t.TempDir(), "base.db")
	w, err := CreateDB(db, NewHeader(p, ImageInfo{Path: "test"}, t0))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, r := range recs {
		if err := w.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(Stats{}); err != nil {
		t.Fatal(err)
	}
	_, back, _, err := ReadDB(db)
	if err != nil {
		t.Fatal(err)
	}
	return back
}
