package cli

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/domainm/domainm/diskscan/ext4test"
	"github.com/domainm/domainm/image/testenv"
)

// TestDiskUnreadableRoot: a disk whose root directory cannot be read (its inode cleared,
// or its directory block zeroed) is an error for every disk command, exit 2 and a message
// naming the root, not exit 0 with nothing scanned or recorded.
func TestDiskUnreadableRoot(t *testing.T) {
	tree := makeDiskTree(t)
	good := filepath.Join(t.TempDir(), "good.ext4")
	ext4test.Mkfs(t, good, tree.dir, 16, "-b", "4096")
	rules := t.TempDir()
	diskMust(t, os.WriteFile(filepath.Join(rules, "none.yar"), []byte("rule never { condition: false }\n"), 0o600))
	db := filepath.Join(t.TempDir(), "base.db")
	if code, out, errOut := diskCLI(t, "baseline", "--image", good, "--db", db); code != ExitClean {
		t.Fatalf("baseline of the good image: exit %d\n%s%s", code, out, errOut)
	}
	for _, c := range []struct{ name, debugfs string }{
		{"root inode cleared", "clri <2>"},
		{"root directory block zeroed", "zap_block -f <2> 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "broken.ext4")
			b, err := os.ReadFile(good)
			diskMust(t, err)
			diskMust(t, os.WriteFile(img, b, 0o600))
			testenv.Run(t, "debugfs", "-w", "-R", c.debugfs, img)
			for _, args := range [][]string{
				{"scan-disk", "--image", img, "--format", "raw", "--rules", rules},
				{"baseline", "--image", img, "--format", "raw", "--db", filepath.Join(t.TempDir(), "new.db")},
				{"check", "--image", img, "--db", db},
			} {
				code, out, errOut := diskCLI(t, args...)
				if code != ExitError || !strings.Contains(errOut, "root") {
					t.Errorf("%s: exit %d, want %d with an error naming the root\n%s%s", args[0], code, ExitError, out, errOut)
				}
			}
		})
	}
}

// TestDiskJournalWarning: an image whose journal the guest's kernel would refuse (here
// e2fsprogs' j_corrupt_commit_csum: a commit block checksum mismatch) is still scanned,
// and every disk command says on stderr that the journal was not applied as the kernel
// would apply it.
func TestDiskJournalWarning(t *testing.T) {
	src, err := filepath.Abs(filepath.Join("..", "..", "..", "..", "shared", "corpora", "e2fsprogs-tests", "j_corrupt_commit_csum.img.gz"))
	diskMust(t, err)
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Skipf("e2fsprogs corpus image not found at %s (../shared/corpora from the repository root): %v", src, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	diskMust(t, err)
	b, err := io.ReadAll(zr)
	diskMust(t, err)
	img := filepath.Join(t.TempDir(), "j.img")
	diskMust(t, os.WriteFile(img, b, 0o600))
	rules := t.TempDir()
	diskMust(t, os.WriteFile(filepath.Join(rules, "none.yar"), []byte("rule never { condition: false }\n"), 0o600))
	db := filepath.Join(t.TempDir(), "base.db")
	for _, args := range [][]string{
		{"baseline", "--image", img, "--format", "raw", "--db", db},
		{"check", "--image", img, "--db", db},
		{"scan-disk", "--image", img, "--format", "raw", "--rules", rules},
	} {
		code, out, errOut := diskCLI(t, args...)
		if code != ExitClean || !strings.Contains(errOut, "journal") || !strings.Contains(errOut, "transaction 3") {
			t.Errorf("%s: exit %d, want %d and a journal warning on stderr\n%s%s", args[0], code, ExitClean, out, errOut)
		}
	}
}
