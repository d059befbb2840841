package diskscan

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestInodeTablesMatchDumpe2fs locates every group's inode table through the group
// descriptors (plain, 64-bit, and meta_bg layouts with more groups than fit one
// descriptor block) and compares with dumpe2fs.
func TestInodeTablesMatchDumpe2fs(t *testing.T) {
	dir := images(t)
	metabg := filepath.Join(t.TempDir(), "metabg.raw")
	run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode,^64bit,^has_journal", "-E", "lazy_itable_init=1", metabg, "300M")
	metabg64 := filepath.Join(t.TempDir(), "metabg64.raw")
	run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode,64bit,^has_journal", "-E", "lazy_itable_init=1", metabg64, "200M")
	for _, img := range []string{filepath.Join(dir, "ext4.raw"), filepath.Join(dir, "ext3-1k.raw"), metabg, metabg64} {
		want := dumpe2fsTables(t, img)
		f, err := os.Open(img)
		must(t, err)
		st, _ := f.Stat()
		fs, err := openExt4(f, st.Size())
		must(t, err)
		if uint64(len(want)) != fs.groups {
			t.Errorf("%s: %d groups, dumpe2fs %d", filepath.Base(img), fs.groups, len(want))
		}
		for g, w := range want {
			got, err := fs.newOp(false).inodeTable(uint64(g))
			if err != nil || got != w {
				t.Errorf("%s: group %d inode table %d (%v), dumpe2fs %d", filepath.Base(img), g, got, err, w)
			}
		}
		f.Close()
	}
}

var tableRE = regexp.MustCompile(`^\s+Inode table at (\d+)-`)

func dumpe2fsTables(t *testing.T, img string) []uint64 {
	out := run(t, "dumpe2fs", img)
	var tables []uint64
	sc := bufio.NewScanner(bytes.NewReader([]byte(out)))
	for sc.Scan() {
		if m := tableRE.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			tables = append(tables, n)
		}
	}
	if len(tables) == 0 {
		t.Fatalf("dumpe2fs %s: no inode tables in output:\n%.500s", img, strings.TrimSpace(out))
	}
	return tables
}

// TestHtreeIndexBlocksRecognised: the index blocks of /many (an htree after e2fsck -D)
// are recognised and their checksums pass, so they are skipped, not parsed as names.
func TestHtreeIndexBlocksRecognised(t *testing.T) {
	dir := images(t)
	for _, name := range []string{"ext4.raw", "ext3-1k.raw"} {
		b := readAll(t, filepath.Join(dir, name))
		fs := mustFS(t, bytes.NewReader(b), int64(len(b))).(*ext4FS)
		o := fs.newOp(false)
		in, err := fs.lookup(o, "/many", false)
		must(t, err)
		if in.flags&flagIndex == 0 {
			t.Fatalf("%s: /many is not indexed", name)
		}
		exts, err := o.mapBlocks(in)
		must(t, err)
		seed := fs.inodeSeed(in.ino, in.raw)
		dx := 0
		for _, e := range exts {
			for i := uint64(0); i < e.n; i++ {
				blk, err := o.block(e.pblk+i, in.off)
				must(t, err)
				ok, err := o.dxBlock(blk, e.lblk+i, int64(e.pblk+i)*fs.bs, seed)
				if err != nil {
					t.Errorf("%s: block %d: %v", name, e.lblk+i, err)
				}
				if ok {
					dx++
				}
			}
		}
		if dx == 0 {
			t.Errorf("%s: no htree index block recognised in /many", name)
		}
		t.Logf("%s: %d index blocks", name, dx)
	}
}
