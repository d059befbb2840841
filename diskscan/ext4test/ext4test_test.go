package ext4test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/domainm/domainm/image/testenv"
)

// TestImage: the tree goes into the image as written, with its modes; Overwrite
// changes a file's content in place (debugfs reads the new bytes) and Debugfs and Fsck
// change and repair the image.
func TestImage(t *testing.T) {
	img := Image(t, map[string]string{"etc/passwd": "root:x:0:0::/root:/bin/sh\n", "var/empty/": ""}, 8)
	if bs := BlockSize(t, img); bs != 4096 {
		t.Errorf("block size %d, want 4096", bs)
	}
	if got := testenv.Run(t, "debugfs", "-R", "cat /etc/passwd", img); !strings.Contains(got, "root:x:0:0::/root:/bin/sh") {
		t.Errorf("/etc/passwd in the image: %q", got)
	}
	if out := testenv.Run(t, "debugfs", "-R", "stat /var/empty", img); !strings.Contains(out, "Type: directory") {
		t.Errorf("/var/empty is no folder: %s", out)
	}
	ino := Inode(t, img, "/etc/passwd")
	Overwrite(t, img, "/etc/passwd", []byte("evil"))
	if got := testenv.Run(t, "debugfs", "-R", "cat /etc/passwd", img); !strings.Contains(got, "\nevil:x:0:0::/root") { // after debugfs's banner
		t.Errorf("after Overwrite: %q", got)
	}
	Debugfs(t, img, "mkdir /new", "ln /etc/passwd /new/link")
	Fsck(t, img)
	if got := Inode(t, img, "/new/link"); got != ino {
		t.Errorf("/new/link is inode %d, want /etc/passwd's %d", got, ino)
	}
}

// TestWriteFileKeepsSetuid: the raw setuid and setgid bits reach the tree.
func TestWriteFileKeepsSetuid(t *testing.T) {
	dir := t.TempDir()
	WriteFile(t, dir, "bin/su", []byte("x"), 0o4755)
	WriteFile(t, dir, "bin/wall", []byte("x"), 0o2755)
	for p, want := range map[string]os.FileMode{"bin/su": os.ModeSetuid | 0o755, "bin/wall": os.ModeSetgid | 0o755} {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()|fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
}
