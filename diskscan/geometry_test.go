package diskscan

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnusualGeometries: filesystems mke2fs can make but the main test set does not
// cover: 64 KiB blocks (rec_len encoding), 2 KiB blocks, bigalloc clusters, and ext2
// without the filetype feature (16-bit name lengths in directory entries).
func TestUnusualGeometries(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(filepath.Join(src, "d", "sub"), 0o755))
	for i := 0; i < 300; i++ {
		must(t, os.WriteFile(filepath.Join(src, "d", fmt.Sprintf("f%03d", i)), []byte(strings.Repeat("x", i*37)), 0o644))
	}
	big := make([]byte, 700001)
	for i := range big {
		big[i] = byte(i * 7)
	}
	must(t, os.WriteFile(filepath.Join(src, "big"), big, 0o4750))
	must(t, os.Symlink("d/f001", filepath.Join(src, "link")))
	must(t, os.Symlink(strings.Repeat("y/", 60), filepath.Join(src, "slow")))
	want := sourceTree(t, src)
	for _, c := range []struct {
		name string
		opts []string
	}{
		{"64k blocks", []string{"-t", "ext4", "-b", "65536"}},
		{"2k blocks", []string{"-t", "ext4", "-b", "2048"}},
		{"bigalloc", []string{"-t", "ext4", "-O", "bigalloc", "-C", "16384"}},
		{"ext2 without filetype", []string{"-t", "ext2", "-O", "^filetype"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "fs.raw")
			args := append([]string{"-q", "-F", "-d", src, "-E", "root_owner=0:0"}, c.opts...)
			run(t, "mke2fs", append(args, img, "64M")...)
			fs, closer, err := OpenVolume(img, -1)
			must(t, err)
			defer closer.Close()
			got, _ := walkAll(t, fs)
			delete(got, "/lost+found")
			if len(got) != len(want) {
				t.Errorf("%d entries, want %d", len(got), len(want))
			}
			for p, w := range want {
				e := got[p]
				if e == nil {
					t.Errorf("%s missing", p)
					continue
				}
				if e.Type != w.typ || e.Mode != w.mode || (w.typ != Dir && e.Size != w.size) || e.LinkTarget != w.target {
					t.Errorf("%s: got %v %#o %d %q, want %v %#o %d %q", p, e.Type, e.Mode, e.Size, e.LinkTarget, w.typ, w.mode, w.size, w.target)
				}
				if w.sha != "" {
					if h := hashFile(t, fs, p); h != w.sha {
						t.Errorf("%s: content differs", p)
					}
				}
			}
		})
	}
}
