package diskscan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
)

// htreeImage builds a 64 MiB ext4 with 1 KiB blocks (metadata_csum) holding /a with
// htreeFiles files of 150-byte names, six to a leaf block, so that e2fsck -D makes /a a
// two-level htree (over 123 leaves, the root's limit), and /zz, /lost+found beside it.
// It returns the image path and the names in /a.
const htreeFiles = 2000

func htreeImage(t *testing.T, dir string) (string, []string) {
	src := filepath.Join(dir, "src")
	must(t, os.MkdirAll(filepath.Join(src, "a"), 0o755))
	var names []string
	for i := 0; i < htreeFiles; i++ {
		n := fmt.Sprintf("f%05d-%s", i, strings.Repeat("n", 143))
		names = append(names, n)
		must(t, os.WriteFile(filepath.Join(src, "a", n), []byte(n[:6]), 0o644))
	}
	must(t, os.WriteFile(filepath.Join(src, "zz"), []byte("unrelated"), 0o644))
	img := filepath.Join(dir, "htree.raw")
	run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-O", "metadata_csum", "-d", src, img, "64M")
	ext4test.Fsck(t, img, "-D")
	if out := run(t, "debugfs", "-R", "htree /a", img); !strings.Contains(out, "Indirect levels: 1") {
		t.Fatalf("/a is not a two-level htree:\n%.400s", out)
	}
	return img, names
}

// dirBlocks returns, for directory p, its (logical block, volume offset) pairs that are
// htree index blocks (index true) and leaf blocks, with the names in each leaf.
type dirBlock struct {
	lblk  uint64
	off   int64
	index bool
	names []string
}

func dirBlocks(t *testing.T, img, p string) []dirBlock {
	b := readAll(t, img)
	fs := mustFS(t, bytes.NewReader(b), int64(len(b))).(*ext4FS)
	o := fs.newOp(false)
	in, err := fs.lookup(o, p, false)
	must(t, err)
	exts, err := o.mapBlocks(in)
	must(t, err)
	seed := fs.inodeSeed(in.ino, in.raw)
	var out []dirBlock
	for _, e := range exts {
		for i := uint64(0); i < e.n; i++ {
			blk, err := o.block(e.pblk+i, in.off)
			must(t, err)
			d := dirBlock{lblk: e.lblk + i, off: int64(e.pblk+i) * fs.bs}
			d.index, err = o.dxBlock(blk, d.lblk, d.off, seed)
			must(t, err)
			if !d.index {
				ents, err := o.parseDirBlock(blk, d.off, nil)
				must(t, err)
				for _, de := range ents {
					d.names = append(d.names, de.name)
				}
			}
			out = append(out, d)
		}
	}
	return out
}

// flipByte inverts the byte at off in the image file with dd, as an attacker (or a
// bad sector) would.
func flipByte(t *testing.T, img string, off int64) {
	f, err := os.Open(img)
	must(t, err)
	one := make([]byte, 1)
	_, err = f.ReadAt(one, off)
	f.Close()
	must(t, err)
	one[0] ^= 0xFF
	bytePath := filepath.Join(t.TempDir(), "byte")
	must(t, os.WriteFile(bytePath, one, 0o600))
	run(t, "dd", "if="+bytePath, "of="+img, "bs=1", fmt.Sprintf("seek=%d", off), "conv=notrunc", "status=none")
}

// baselineLike walks the volume and opens and reads every regular file, as baseline
// does, returning the entries and the per-path errors.
func baselineLike(t *testing.T, fs FS) (map[string]*Entry, map[string]error) {
	ents, errs := map[string]*Entry{}, map[string]error{}
	must(t, fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
		if err != nil {
			errs[p] = err
			return nil
		}
		ents[p] = e
		if e.Type == Regular {
			r, err := fs.Open(p)
			if err != nil {
				errs[p] = err
				return nil
			}
			defer r.Close()
			if _, err := io.Copy(io.Discard, r); err != nil {
				errs[p] = err
			}
		}
		return nil
	}))
	return ents, errs
}

// TestCorruptHtreeLeafCostsOnlyItsNames: one leaf block of /a (a two-level htree of
// 2,000 files) fails its checksum. A baseline-like pass (walk, open every file) must
// stay fast, list every name of /a's other blocks (linear scan, as the kernel falls
// back to), report /a's damage once for /a, make the bad block's names an error (not
// "does not exist"), and leave /zz and /lost+found readable: a corrupt directory must
// not use up the filesystem's work budget.
func TestCorruptHtreeLeafCostsOnlyItsNames(t *testing.T) {
	dir := t.TempDir()
	img, names := htreeImage(t, dir)
	var leaf *dirBlock
	blocks := dirBlocks(t, img, "/a")
	for i := range blocks {
		if !blocks[i].index && len(blocks[i].names) > 0 && blocks[i].lblk > 10 {
			leaf = &blocks[i]
			break
		}
	}
	if leaf == nil {
		t.Fatal("no leaf block with names in /a")
	}
	// The last 4 bytes of a leaf block are its checksum (struct ext4_dir_entry_tail).
	flipByte(t, img, leaf.off+1024-1)
	if out, _ := execCommand("e2fsck", "-fn", img).CombinedOutput(); !strings.Contains(string(out), "checksum") {
		t.Fatalf("e2fsck -fn does not see the damage:\n%s", out)
	}

	fs, c, err := OpenVolumeFormat(img, "raw", -1)
	must(t, err)
	defer c.Close()
	start := time.Now()
	ents, errs := baselineLike(t, fs)
	took := time.Since(start)
	t.Logf("walk and read of %d entries: %v, %d errors", len(ents), took, len(errs))
	if took > 15*time.Second {
		t.Errorf("walk and read took %v", took)
	}
	for _, p := range []string{"/zz", "/lost+found", "/a"} {
		if ents[p] == nil {
			t.Errorf("%s not reported by the walk: %v", p, errs[p])
		}
		if _, err := fs.Lstat(p); err != nil {
			t.Errorf("Lstat %s after the walk: %v", p, err)
		}
	}
	if r, err := fs.Open("/zz"); err != nil {
		t.Errorf("Open /zz: %v", err)
	} else if b, _ := io.ReadAll(r); string(b) != "unrelated" {
		t.Errorf("/zz = %q", b)
	}
	if err := errs["/a"]; !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("block %d", leaf.lblk)) {
		t.Errorf("/a: error %v, want ErrCorrupt naming block %d", err, leaf.lblk)
	}
	inBad := map[string]bool{}
	for _, n := range leaf.names {
		inBad[n] = true
	}
	listed := 0
	for _, n := range names {
		e := ents["/a/"+n]
		switch {
		case inBad[n] && e != nil:
			t.Errorf("/a/%s listed from the damaged block", n)
		case !inBad[n] && e == nil:
			t.Errorf("/a/%s missing (its block is sound): %v", n, errs["/a/"+n])
		case e != nil:
			listed++
		}
	}
	for p, err := range errs {
		if p != "/a" {
			t.Errorf("unexpected error for %s: %v", p, err)
		}
	}
	if want := len(names) - len(leaf.names); listed != want {
		t.Errorf("%d names of /a listed, want %d (all but the %d in block %d)", listed, want, len(leaf.names), leaf.lblk)
	}
	_, err = fs.Lstat("/a/" + leaf.names[0])
	if err == nil || errors.Is(err, iofs.ErrNotExist) || !errors.Is(err, ErrCorrupt) {
		t.Errorf("Lstat of a name in the damaged block: %v, want ErrCorrupt, not ErrNotExist", err)
	}
}

// TestCorruptHtreeIndexFallsBackToLinear: an interior htree node of /a fails its
// checksum (as in e2fsprogs' f_preen_htree_csum). Index blocks hold no names, so the
// linear scan the kernel falls back to lists every name, without error.
func TestCorruptHtreeIndexFallsBackToLinear(t *testing.T) {
	dir := t.TempDir()
	img, names := htreeImage(t, dir)
	var node *dirBlock
	blocks := dirBlocks(t, img, "/a")
	for i := range blocks {
		if blocks[i].index && blocks[i].lblk != 0 {
			node = &blocks[i]
			break
		}
	}
	if node == nil {
		t.Fatal("no interior htree node in /a")
	}
	flipByte(t, img, node.off+8+4) // a byte of the node's first index entry
	if out, _ := execCommand("e2fsck", "-fn", img).CombinedOutput(); !strings.Contains(string(out), "internal node fails checksum") {
		t.Fatalf("e2fsck -fn does not see the damage:\n%s", out)
	}
	fs, c, err := OpenVolumeFormat(img, "raw", -1)
	must(t, err)
	defer c.Close()
	ents, errs := baselineLike(t, fs)
	for p, err := range errs {
		t.Errorf("%s: %v", p, err)
	}
	for _, n := range names {
		if ents["/a/"+n] == nil {
			t.Errorf("/a/%s missing", n)
		}
	}
	if ents["/zz"] == nil || ents["/lost+found"] == nil {
		t.Error("/zz or /lost+found missing")
	}
}

// TestPreenHtreeCsumCorpus: e2fsprogs' f_preen_htree_csum (an 8,192-file htree whose
// interior node fails its checksum) lists /a in full, as it is after e2fsck repairs it,
// and keeps /lost+found; a walk and read of every file stays fast.
func TestPreenHtreeCsumCorpus(t *testing.T) {
	corpusImages(t) // skips, naming the path, without the corpus
	raw, cleanup := decompressed(t, filepath.Join(e2fsCorpus(t), "f_preen_htree_csum.img.gz"))
	defer cleanup()
	fs, c, err := OpenVolumeFormat(raw, "raw", -1)
	must(t, err)
	defer c.Close()
	start := time.Now()
	ents, errs := baselineLike(t, fs)
	took := time.Since(start)
	for p, err := range errs {
		t.Errorf("%s: %v", p, err)
	}
	if ents["/lost+found"] == nil {
		t.Error("/lost+found missing")
	}
	// The oracle: debugfs's listing after e2fsck -fy has cleared the htree index (on the
	// damaged image, debugfs itself lists only some 7,500 of the 8,192 names).
	fixed := filepath.Join(t.TempDir(), "fixed.img")
	copyFile(t, raw, fixed)
	if out, err := execCommand("e2fsck", "-fy", fixed).CombinedOutput(); exitCode(err) > 1 {
		t.Fatalf("e2fsck -fy: %v\n%s", err, out)
	}
	want := map[string]bool{}
	for _, l := range strings.Split(debugfsOut(t, "ls -l /a", fixed), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] != "." && f[len(f)-1] != ".." {
			want["/a/"+f[len(f)-1]] = true
		}
	}
	n := 0
	for p := range ents {
		if strings.HasPrefix(p, "/a/") {
			n++
			if !want[p] {
				t.Errorf("%s listed, not in e2fsck's repaired /a", p)
			}
		}
	}
	if n != len(want) || n < 8000 {
		t.Errorf("%d entries in /a, e2fsck's repaired /a has %d", n, len(want))
	}
	if took > 15*time.Second {
		t.Errorf("walk and read took %v", took)
	}
	t.Logf("%d entries in /a, walk and read in %v", n, took)
}
