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
