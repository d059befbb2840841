package diskscan

import (
	"bytes"
	"compress/bzip2"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestJournalReplay writes transactions into the journal with debugfs (jo/jw/jc): a new
// data block for /etc/passwd and an inode-table block giving it the setuid bit, then,
// in a second case, a revoke of the data block. The reader must show what e2fsck shows
// after replaying the journal, without writing anything.
func TestJournalReplay(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "other"), bytes.Repeat([]byte("o"), 10000), 0o600))
	for _, revoke := range []bool{false, true} {
		t.Run(fmt.Sprintf("revoke=%v", revoke), func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "fs.raw")
			run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-d", src, img, "64M")
			b := readAll(t, img)
			fs := mustFS(t, bytes.NewReader(b), int64(len(b))).(*ext4FS)
			o := fs.newOp(false)
			in, err := fs.lookup(o, "/etc/passwd", false)
			must(t, err)
			exts, err := o.mapBlocks(in)
			must(t, err)
			dataBlk := exts[0].pblk
			g, idx := uint64(in.ino-1)/fs.inodesPerGroup, uint64(in.ino-1)%fs.inodesPerGroup
			table, err := o.inodeTable(g)
			must(t, err)
			itBlk := table + idx*uint64(fs.inodeSize)/uint64(fs.bs)
			inOff := int64(idx*uint64(fs.inodeSize)) % fs.bs

			itCopy := append([]byte(nil), b[int64(itBlk)*fs.bs:int64(itBlk+1)*fs.bs]...)
			raw := itCopy[inOff : inOff+fs.inodeSize]
			binary.LittleEndian.PutUint16(raw, binary.LittleEndian.Uint16(raw)|0o4000)
			setInodeCsum(fs, in.ino, raw)
			data := make([]byte, fs.bs)
			// Start with the jbd2 magic, so that the journal must escape the block.
			binary.BigEndian.PutUint32(data, jbdMagic)
			copy(data[4:], "hacked:x:0:0::/:/bin/sh\n")
			f1, f2 := filepath.Join(dir, "data"), filepath.Join(dir, "itable")
			must(t, os.WriteFile(f1, data, 0o644))
			must(t, os.WriteFile(f2, itCopy, 0o644))
			cmds := fmt.Sprintf("jo\njw -b %d %s\njw -b %d %s\n", dataBlk, f1, itBlk, f2)
			if revoke {
				cmds += fmt.Sprintf("jw -r %d\n", dataBlk)
			}
			cmds += "jc\n"
			must(t, os.WriteFile(filepath.Join(dir, "cmds"), []byte(cmds), 0o644))
			run(t, "debugfs", "-w", "-f", filepath.Join(dir, "cmds"), img)
			if out := run(t, "dumpe2fs", "-h", img); !strings.Contains(out, "needs_recovery") {
				t.Fatalf("debugfs left no journal to recover:\n%s", out)
			}

			jfs, c, err := OpenVolume(img, -1)
			must(t, err)
			defer c.Close()
			if n := jfs.(*ext4FS).journalBlocks; n == 0 {
				t.Fatal("no journal blocks replayed")
			}
			if jb, ok := jfs.(*ext4FS).dev.(*overlay).m[dataBlk]; !revoke && (!ok || !jb.escaped) {
				t.Errorf("data block %d: replayed %v, escaped %v; want an escaped copy", dataBlk, ok, jb.escaped)
			}
			e, err := jfs.Lstat("/etc/passwd")
			must(t, err)
			if e.Mode != 0o4644 {
				t.Errorf("/etc/passwd mode %#o, want 04644 from the journal", e.Mode)
			}
			content := readWhole(t, jfs, "/etc/passwd")
			hacked := bytes.HasPrefix(content, data[:10])
			if hacked == revoke {
				t.Errorf("/etc/passwd content %q (revoked: %v)", content[:10], revoke)
			}

			// Second opinion: e2fsck replays the journal into a copy.
			fixed := filepath.Join(dir, "fixed.raw")
			copyFile(t, img, fixed)
			out, err := execCommand("e2fsck", "-fy", fixed).CombinedOutput()
			if exitCode(err) > 1 {
				t.Fatalf("e2fsck: %v\n%s", err, out)
			}
			ffs, c2, err := OpenVolume(fixed, -1)
			must(t, err)
			defer c2.Close()
			want, _ := walkAll(t, ffs)
			got, _ := walkAll(t, jfs)
			for p, w := range want {
				g := got[p]
				if g == nil || g.Mode != w.Mode || g.Size != w.Size || g.Inode != w.Inode || !g.Mtime.Equal(w.Mtime) {
					t.Errorf("%s: replayed %+v, e2fsck %+v", p, g, w)
				}
				if w.Type == Regular && hashFile(t, jfs, p) != hashFile(t, ffs, p) {
					t.Errorf("%s: contents differ from e2fsck's replay", p)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d entries, e2fsck's replay %d", len(got), len(want))
			}
		})
	}
}

// setInodeCsum stores a correct metadata_csum checksum in a raw inode.
func setInodeCsum(fs *ext4FS, ino uint32, raw []byte) {
	le := binary.LittleEndian
	raw[0x7C], raw[0x7D], raw[0x82], raw[0x83] = 0, 0, 0, 0
	c := crc32c(fs.inodeSeed(ino, raw), raw)
	le.PutUint16(raw[0x7C:], uint16(c))
	le.PutUint16(raw[0x82:], uint16(c>>16))
}

// TestJournalSpaceReused: once the guest's journal moves on and overwrites the
// transaction's descriptor, its blocks are home; the reader must then read the home
// location, not the stale position in the journal.
func TestJournalSpaceReused(t *testing.T) {
	b, err := readGz("testdata/journal.img.gz")
	must(t, err)
	m := &mutatingImage{img: b}
	fs := mustFS(t, m, int64(len(b))).(*ext4FS)
	ov, ok := fs.dev.(*overlay)
	if !ok || len(ov.m) == 0 {
		t.Fatal("journal seed: nothing replayed")
	}
	if got := string(readWhole(t, fs, "/etc/passwd")[:6]); got != "hacked" {
		t.Fatalf("before reuse: %q", got)
	}
	var desc int64
	for _, jb := range ov.m {
		desc = jb.descOff
	}
	m.mu.Lock()
	copy(m.img[desc:desc+12], make([]byte, 12)) // the journal wrapped over the descriptor
	m.mu.Unlock()
	if got := string(readWhole(t, fs, "/etc/passwd")); !strings.HasPrefix(got, "root:") {
		t.Errorf("after reuse: %q, want the home block", got)
	}
}

// corpusImage decompresses an e2fsprogs test image (NAME.img.gz or .bz2) into dir.
func corpusImage(t *testing.T, dir, name string) string {
	t.Helper()
	src := filepath.Join(e2fsCorpus(t), name)
	img := filepath.Join(dir, strings.TrimSuffix(strings.TrimSuffix(name, ".gz"), ".bz2"))
	var b []byte
	var err error
	switch {
	case strings.HasSuffix(name, ".gz"):
		b, err = readGz(src)
	case strings.HasSuffix(name, ".bz2"):
		var raw []byte
		raw, err = readFile(src)
		if err == nil {
			b, err = io.ReadAll(bzip2.NewReader(bytes.NewReader(raw)))
		}
	default:
		b, err = readFile(src)
	}
	must(t, err)
	must(t, os.WriteFile(img, b, 0o644))
	return img
}

// rdumpFixed runs e2fsck -fy on a copy of img (its journal replay) and debugfs rdump of
// the result, and returns the folder holding the dumped tree and the repaired copy.
func rdumpFixed(t *testing.T, img string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	fixed := filepath.Join(dir, "fixed.img")
	copyFile(t, img, fixed)
	if out, err := execCommand("e2fsck", "-fy", fixed).CombinedOutput(); exitCode(err) > 2 {
		t.Fatalf("e2fsck -fy: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "rdump")
	must(t, os.Mkdir(out, 0o755))
	run(t, "debugfs", "-R", "rdump / "+out, fixed)
	return out, fixed
}

// TestJournalCorpus replays the journals of e2fsprogs' test images and compares every
// file's contents with what e2fsck's replay gives (e2fsck -fy on a copy, then debugfs
// rdump). Journals that the kernel refuses (bad commit, descriptor, data-block or
// journal-superblock checksums) must be reported by JournalError; the volume is then read
// as e2fsck leaves it. Fast commits (j_recover_fast_commit: /a/new created, /a/data
// written, /a/old unlinked) are replayed.
func TestJournalCorpus(t *testing.T) {
	for _, c := range []struct {
		image   string
		problem string // "" when the journal replays cleanly; else a word of JournalError
		edit    func(t *testing.T, img string)
		repair  string // a path that e2fsck's repair (not its replay) removes
	}{
		{"j_corrupt_commit_csum.img.gz", "transaction 3", nil, ""},
		{"j_corrupt_descr_csum.img.gz", "checksum", nil, ""},
		{"j_corrupt_journal_block.img.gz", "data block", nil, ""},
		{"j_corrupt_sb_csum.img.gz", "superblock checksum", nil, ""},
		{"j_corrupt_commit_tid.img.gz", "", nil, ""},
		{"j_corrupt_descr_tid.img.gz", "", nil, ""},
		{"j_corrupt_revoke_block.img.gz", "", nil, ""},
		{"j_corrupt_revoke_csum.img.gz", "", nil, ""},
		{"j_corrupt_revoke_rcount.img.gz", "revoke", nil, ""},
		{"j_corrupt_sb_magic.img.gz", "magic", nil, ""},
		{"j_recover_csum2_32bit.img.bz2", "", nil, ""},
		{"j_recover_csum2_64bit.img.bz2", "", nil, ""},
		{"j_recover_csum3_64bit.img.bz2", "", nil, ""},
		{"j_recover_fast_commit.img.gz", "", nil, ""},
		{"f_jnl_32bit.img.gz", "", nil, ""},
		{"f_jnl_64bit.img.gz", "", nil, ""},
		// The journal inode's table block is zeroed on disk (its copy is in the journal):
		// the kernel refuses the journal, e2fsck replays it through the superblock's copy
		// of the journal inode's block map.
		// e2fsck's repair then moves the old-style visible /journal to a hidden inode.
		{"f_journal.img.gz", "superblock's copy", nil, "/journal"},
		// A byte of the first fast commit changed: its tail checksum fails, so the kernel
		// fails the whole recovery (and e2fsck replays nothing).
		{"j_recover_fast_commit.img.gz", "fast-commit block", corruptFastCommit, ""},
	} {
		name := c.image
		if c.edit != nil {
			name += "/damaged"
		}
		t.Run(name, func(t *testing.T) {
			img := corpusImage(t, t.TempDir(), c.image)
			if c.edit != nil {
				c.edit(t, img)
			}
			want, fixed := rdumpFixed(t, img)
			fs, closer, err := OpenVolumeFormat(img, "raw", -1)
			must(t, err)
			defer closer.Close()
			jerr := JournalError(fs)
			switch {
			case c.problem == "" && jerr != nil:
				t.Errorf("JournalError: %v, want nil", jerr)
			case c.problem != "" && (jerr == nil || !errors.Is(jerr, ErrJournal) || !strings.Contains(jerr.Error(), c.problem)):
				t.Errorf("JournalError: %v, want ErrJournal naming %q", jerr, c.problem)
			}
			compareRdump(t, fs, want, c.repair)
			compareMeta(t, fs, fixed)
		})
	}
}

// compareMeta checks that the entries of fs have the attributes that the same paths have
// in the e2fsck-repaired image (read with this package: its journal is empty then).
func compareMeta(t *testing.T, fs FS, fixed string) {
	t.Helper()
	ffs, c, err := OpenVolumeFormat(fixed, "raw", -1)
	must(t, err)
	defer c.Close()
	want, _ := walkAll(t, ffs)
	got, _ := walkAll(t, fs)
	for p, w := range want {
		g := got[p]
		if g == nil {
			continue // compareRdump reports it
		}
		if g.Mode != w.Mode || g.Type != w.Type || g.Size != w.Size || g.UID != w.UID || g.GID != w.GID ||
			g.Nlink != w.Nlink || g.Inode != w.Inode || !g.Mtime.Equal(w.Mtime) || !g.Ctime.Equal(w.Ctime) || g.LinkTarget != w.LinkTarget {
			t.Errorf("%s: ours %+v, e2fsck's %+v", p, *g, *w)
		}
	}
}

// corruptFastCommit changes a byte inside the first fast-commit block's INODE tag.
func corruptFastCommit(t *testing.T, img string) {
	b := readAll(t, img)
	fs := mustFS(t, bytes.NewReader(b), int64(len(b))).(*ext4FS)
	j, err := fs.loadJournal(8, nil, false)
	must(t, err)
	off, err := j.offset(j.last + 1)
	must(t, err)
	if binary.LittleEndian.Uint16(b[off:]) != fcTagHead {
		t.Fatalf("no fast-commit HEAD tag at %#x", off)
	}
	b[off+40] ^= 0x55
	must(t, os.WriteFile(img, b, 0o644))
}

// compareRdump checks that fs has the same paths as the dumped tree and, for regular
// files, the same contents. Inodes that e2fsck's repair (not its replay) reconnected to
// /lost+found as "#INO", and the path repaired that its repair removed, are left out.
func compareRdump(t *testing.T, fs FS, dump, repaired string) {
	t.Helper()
	got, _ := walkAll(t, fs)
	seen := map[string]bool{"/": true}
	err := filepath.WalkDir(dump, func(hp string, d os.DirEntry, err error) error {
		if err != nil || hp == dump {
			return err
		}
		rel, err := filepath.Rel(dump, hp)
		if err != nil {
			return err
		}
		p := "/" + filepath.ToSlash(rel)
		if strings.HasPrefix(p, "/lost+found/#") {
			return nil
		}
		seen[p] = true
		e := got[p]
		if e == nil {
			t.Errorf("%s: in e2fsck's replay, not in ours", p)
			return nil
		}
		if d.Type().IsRegular() {
			w, err := os.ReadFile(hp)
			if err != nil {
				return err
			}
			if g := readWhole(t, fs, p); !bytes.Equal(g, w) {
				t.Errorf("%s: %d bytes %.16q, e2fsck's replay %d bytes %.16q", p, len(g), g, len(w), w)
			}
		}
		return nil
	})
	must(t, err)
	for p := range got {
		if !seen[p] && p != repaired {
			t.Errorf("%s: in our replay, not in e2fsck's", p)
		}
	}
}

// TestFastCommitRanges checks the block-map patching of fast-commit ranges against a
// block-by-block model (the last range covering a block wins; a deleted block is
// unmapped), on random extents and overlapping ranges.
func TestFastCommitRanges(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	fs := &ext4FS{blocks: 1 << 20}
	for iter := 0; iter < 500; iter++ {
		const nblk = 300
		model := map[uint64]extent{} // logical block → its mapping (n unused)
		var exts []extent
		for l := uint64(0); l < nblk; {
			l += uint64(rnd.Intn(20))
			n := uint64(1 + rnd.Intn(15))
			e := extent{lblk: l, pblk: 1000 + uint64(rnd.Intn(100000)), n: n, uninit: rnd.Intn(4) == 0}
			exts = append(exts, e)
			for b := uint64(0); b < n; b++ {
				model[l+b] = extent{pblk: e.pblk + b, uninit: e.uninit}
			}
			l += n
		}
		r := &fcReplay{ranges: map[uint32][]fcRange{}}
		for k := rnd.Intn(12); k > 0; k-- {
			rg := fcRange{lblk: uint64(rnd.Intn(nblk + 20)), n: uint64(rnd.Intn(40)), del: rnd.Intn(3) == 0}
			if !rg.del {
				rg.pblk, rg.uninit = 500000+uint64(rnd.Intn(100000)), rnd.Intn(3) == 0
			}
			r.ranges[7] = append(r.ranges[7], rg)
			for b := uint64(0); b < rg.n; b++ {
				if rg.del {
					delete(model, rg.lblk+b)
				} else {
					model[rg.lblk+b] = extent{pblk: rg.pblk + b, uninit: rg.uninit}
				}
			}
		}
		got, err := r.patchExtents(fs, 7, exts, nblk)
		must(t, err)
		seen := map[uint64]bool{}
		for i, e := range got {
			if i > 0 && got[i-1].lblk+got[i-1].n > e.lblk {
				t.Fatalf("iteration %d: extents overlap or are unsorted: %+v", iter, got)
			}
			for b := uint64(0); b < e.n; b++ {
				w, ok := model[e.lblk+b]
				if !ok || w.pblk != e.pblk+b || w.uninit != e.uninit {
					t.Fatalf("iteration %d: block %d → %d (uninit %v), model %+v (mapped %v)", iter, e.lblk+b, e.pblk+b, e.uninit, w, ok)
				}
				seen[e.lblk+b] = true
			}
		}
		for l := range model {
			if l < nblk && !seen[l] {
				t.Fatalf("iteration %d: block %d mapped in the model, not in the result", iter, l)
			}
		}
	}
}

// TestJournalTornCommitBlock: a commit block whose end was not written (garbage after its
// header, checksum over header and zeros holding) is accepted, as recent kernels accept
// it (jbd2_commit_block_csum_verify_partial); one whose header is damaged is not.
func TestJournalTornCommitBlock(t *testing.T) {
	img := corpusImage(t, t.TempDir(), "j_recover_csum3_64bit.img.bz2")
	clean := readAll(t, img)
	fs0 := mustFS(t, bytes.NewReader(clean), int64(len(clean))).(*ext4FS)
	want, _ := walkAll(t, fs0)
	j, err := fs0.loadJournal(8, nil, false)
	must(t, err)
	var commit int64 = -1 // volume offset of the last commit block of the log
	for l := uint64(j.start); l < min(j.last, uint64(j.start)+64); l++ {
		b, err := j.block(l)
		must(t, err)
		if binary.BigEndian.Uint32(b) == jbdMagic && binary.BigEndian.Uint32(b[4:]) == jbdCommit {
			commit, err = j.offset(l)
			must(t, err)
		}
	}
	if commit < 0 {
		t.Fatal("no commit block in the log")
	}
	for _, c := range []struct {
		name   string
		at     int64
		refuse bool
	}{{"tail torn", 600, false}, {"header damaged", 0x30, true}} {
		t.Run(c.name, func(t *testing.T) {
			b := append([]byte(nil), clean...)
			b[commit+c.at] ^= 0xA5
			fs := mustFS(t, bytes.NewReader(b), int64(len(b)))
			if jerr := JournalError(fs); (jerr != nil) != c.refuse {
				t.Fatalf("JournalError: %v, want an error: %v", jerr, c.refuse)
			}
			if c.refuse {
				return
			}
			got, _ := walkAll(t, fs)
			for p, w := range want {
				if g := got[p]; g == nil || g.Size != w.Size || g.Mode != w.Mode || (w.Type == Regular && hashFile(t, fs, p) != hashFile(t, fs0, p)) {
					t.Errorf("%s: differs from the replay of the intact journal", p)
				}
			}
		})
	}
}

// TestJournalDamage flips random bytes in the journal of images that need recovery (its
// superblock, log and fast-commit blocks) and checks that opening and walking never
// panics (bugsPanic is set in tests), stays fast, and that any error from JournalError
// matches ErrJournal.
func TestJournalDamage(t *testing.T) {
	withRetries(t, noRetries) // the damage is static: retrying cannot help
	images := map[string][]byte{}
	b, err := readGz("testdata/journal.img.gz")
	must(t, err)
	images["journal.img"] = b
	if _, err := os.Stat(e2fsCorpusPath()); err == nil {
		images["j_recover_fast_commit"] = readAll(t, corpusImage(t, t.TempDir(), "j_recover_fast_commit.img.gz"))
	}
	for name, clean := range images {
		fs0 := mustFS(t, bytes.NewReader(clean), int64(len(clean))).(*ext4FS)
		j, err := fs0.loadJournal(8, nil, false)
		must(t, err)
		var blocks []int64 // volume offsets of the journal blocks in use
		for _, l := range []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, j.last + 1, j.last + 2} {
			if off, err := j.offset(l); err == nil {
				blocks = append(blocks, off)
			}
		}
		rnd := rand.New(rand.NewSource(9))
		errs := 0
		for iter := 0; iter < 300; iter++ {
			img := append([]byte(nil), clean...)
			for n := 1 + rnd.Intn(6); n > 0; n-- {
				off := blocks[rnd.Intn(len(blocks))] + int64(rnd.Intn(int(fs0.bs)))
				img[off] ^= byte(1 + rnd.Intn(255))
			}
			start := time.Now()
			fs, err := OpenFS(bytes.NewReader(img), int64(len(img)))
			if err == nil {
				if jerr := JournalError(fs); jerr != nil {
					errs++
					if !errors.Is(jerr, ErrJournal) {
						t.Errorf("%s iteration %d: %v does not match ErrJournal", name, iter, jerr)
					}
				}
				noRetryWait(fs)
				walkBounded(t, fs)
			} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedFS) {
				t.Errorf("%s iteration %d: open: %v", name, iter, err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("%s iteration %d: %v", name, iter, d)
			}
		}
		t.Logf("%s: 300 damaged journals, %d reported by JournalError", name, errs)
		if errs == 0 {
			t.Errorf("%s: no damage reported at all", name)
		}
	}
}
