package diskscan

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// region is a byte range of an image that random damage is aimed at.
type region struct {
	name     string
	off, len int64
}

// ext4Regions locates the structures to damage in a healthy ext4 image: superblock,
// group descriptors, the first inode table, and the blocks of some directories and
// extent-tree nodes (found with the reader itself, before damage).
func ext4Regions(t *testing.T, img []byte) []region {
	fs, err := openExt4(bytes.NewReader(img), int64(len(img)))
	must(t, err)
	o := fs.newOp(false)
	bs := fs.bs
	rs := []region{
		{"superblock", 1024, 1024},
		{"group descriptors", int64(fs.firstDataBlock+1) * bs, bs},
	}
	it, err := o.inodeTable(0)
	must(t, err)
	rs = append(rs, region{"inode table", int64(it) * bs, int64(min(fs.inodesPerGroup*uint64(fs.inodeSize), 64<<10))})
	for _, p := range []string{"/", "/many", "/bin", "/fragmented", "/bigsparse", "/etc"} {
		in, err := fs.lookup(o, p, false)
		must(t, err)
		if in.flags&flagInlineData != 0 {
			continue
		}
		if in.flags&flagExtents != 0 {
			// Extent index blocks: children of the root node when depth > 0.
			if binary.LittleEndian.Uint16(in.iblock[6:]) > 0 {
				child := uint64(binary.LittleEndian.Uint32(in.iblock[16:])) | uint64(binary.LittleEndian.Uint16(in.iblock[20:]))<<32
				rs = append(rs, region{"extent node of " + p, int64(child) * bs, bs})
			}
		}
		exts, err := o.mapBlocks(in)
		must(t, err)
		if len(exts) > 0 && in.fileType() == Dir {
			rs = append(rs, region{"directory block of " + p, int64(exts[0].pblk) * bs, int64(min(exts[0].n, 4)) * bs})
		}
	}
	return rs
}

// damage overwrites a few random bytes or a random run inside r and returns an undo.
func damage(img []byte, r region, rnd *rand.Rand) (undo func()) {
	saved := append([]byte(nil), img[r.off:r.off+r.len]...)
	switch rnd.Intn(3) {
	case 0: // a few random bytes
		for i := 0; i < 1+rnd.Intn(8); i++ {
			img[r.off+rnd.Int63n(r.len)] = byte(rnd.Intn(256))
		}
	case 1: // a run of random bytes
		n := min(int64(1+rnd.Intn(64)), r.len)
		rnd.Read(img[r.off+rnd.Int63n(r.len-n+1):][:n])
	case 2: // a 32-bit field set to an extreme value
		at := r.off + rnd.Int63n(r.len-3)&^3
		v := []uint32{0, 0xFFFFFFFF, 0x7FFFFFFF, 1, 2, 0x80000000}[rnd.Intn(6)]
		binary.LittleEndian.PutUint32(img[at:], v)
	}
	return func() { copy(img[r.off:], saved) }
}

// walkDamaged opens and walks a (damaged) volume, reading up to 1 MiB of every regular
// file, and fails if that takes longer than limit. Panics fail the test binary.
func walkDamaged(t *testing.T, r io.ReaderAt, size int64, limit time.Duration, what string) {
	done := make(chan string, 1)
	go func() {
		fs, err := openVolume(r, size, -1)
		if err != nil {
			done <- "open: " + err.Error()
			return
		}
		noRetryWait(fs) // the damage is static: waiting cannot help
		n, errs := 0, 0
		fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
			n++
			if err != nil {
				errs++
				return nil
			}
			if e.Type == Regular {
				if f, err := fs.Open(p); err == nil {
					io.Copy(io.Discard, io.LimitReader(f, 1<<20))
					f.Close()
				}
			}
			return nil
		})
		done <- fmt.Sprintf("%d entries, %d errors", n, errs)
	}()
	select {
	case res := <-done:
		t.Logf("%s: %s", what, res)
	case <-time.After(limit):
		t.Fatalf("%s: walk did not finish within %v", what, limit)
	}
}

func TestRandomDamageExt4(t *testing.T) {
	withRetries(t, noRetries) // the damage is static: retrying cannot help
	dir := images(t)
	for _, name := range []string{"ext4.raw", "ext3-1k.raw", "inline.raw", "ext2.raw"} {
		t.Run(name, func(t *testing.T) {
			img, err := os.ReadFile(filepath.Join(dir, name))
			must(t, err)
			regions := ext4Regions(t, img)
			rnd := rand.New(rand.NewSource(42))
			for i := 0; i < 60; i++ {
				r := regions[i%len(regions)]
				undo := damage(img, r, rnd)
				walkDamaged(t, bytes.NewReader(img), int64(len(img)), 20*time.Second, fmt.Sprintf("seed 42 #%d %s", i, r.name))
				undo()
			}
		})
	}
}

func TestRandomDamageQcow2(t *testing.T) {
	withRetries(t, noRetries)
	dir := images(t)
	img, err := os.ReadFile(filepath.Join(dir, "ext4.qcow2"))
	must(t, err)
	hd, err := parseQcow2Header(bytes.NewReader(img), int64(len(img)))
	must(t, err)
	regions := []region{{"qcow2 L1 table", hd.l1Off, hd.l1Size * 8}}
	for i := int64(0); i < hd.l1Size; i++ {
		if l2 := int64(binary.BigEndian.Uint64(img[hd.l1Off+8*i:]) & qcowOffsetMask); l2 != 0 {
			used := min(int64(1)<<hd.clusterBits, (hd.size>>hd.clusterBits+1)*8) // entries that map the disk
			regions = append(regions, region{fmt.Sprintf("qcow2 L2 table %d", i), l2, used})
		}
	}
	rnd := rand.New(rand.NewSource(7))
	for i := 0; i < 40; i++ {
		r := regions[i%len(regions)]
		undo := damage(img, r, rnd)
		what := fmt.Sprintf("seed 7 #%d %s", i, r.name)
		if hd, err := parseQcow2Header(bytes.NewReader(img), int64(len(img))); err == nil {
			if q, err := newQcow2(bytes.NewReader(img), int64(len(img)), hd, nil, 0); err == nil {
				walkDamaged(t, q, q.size, 20*time.Second, what)
			}
		}
		undo()
	}
}

// TestManyNamesOneCorruptInode: 5,000 directory entries naming one inode whose
// checksum fails. Each name must be reported, without re-reading the inode table for
// every one (the walk stays fast).
func TestManyNamesOneCorruptInode(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must(t, os.MkdirAll(filepath.Join(src, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "victim"), []byte("x"), 0o644))
	for i := 0; i < 5000; i++ {
		must(t, os.Link(filepath.Join(src, "victim"), filepath.Join(src, fmt.Sprintf("d/n%05d", i))))
	}
	img := filepath.Join(dir, "fs.raw")
	run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-d", src, img, "64M")
	b := readAll(t, img)
	fs0 := mustFS(t, bytes.NewReader(b), int64(len(b))).(*ext4FS)
	in, err := fs0.lookup(fs0.newOp(false), "/victim", false)
	must(t, err)
	it, err := fs0.newOp(false).inodeTable(uint64(in.ino-1) / fs0.inodesPerGroup)
	must(t, err)
	b[int64(it)*fs0.bs+int64(uint64(in.ino-1)%fs0.inodesPerGroup)*fs0.inodeSize+0x24] ^= 1

	cr := &countingReader{r: bytes.NewReader(b)}
	fs := mustFS(t, cr, int64(len(b)))
	start := time.Now()
	errs := 0
	must(t, fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
		if err != nil {
			errs++
		}
		return nil
	}))
	if errs != 5001 {
		t.Errorf("%d per-path errors, want 5001", errs)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("walk took %v", d)
	}
	if n := cr.bytes.Load(); n > 64<<20 {
		t.Errorf("walk read %d MiB of a 64 MiB volume", n>>20)
	}
	t.Logf("%d errors in %v, %d KiB read", errs, time.Since(start), cr.bytes.Load()>>10)
}

type countingReader struct {
	r     io.ReaderAt
	bytes atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.bytes.Add(int64(n))
	return n, err
}

// TestWorkLimit: once an FS's shared pool of metadata work is spent (what a hostile
// image with every inode claiming the same huge tree would cause), an operation that
// needs more than its own allowance fails with ErrCorrupt instead of going on for
// hours, while operations within their allowance (other paths) still work; a newly
// opened FS has its pool again.
func TestWorkLimit(t *testing.T) {
	dir := images(t)
	b := readAll(t, filepath.Join(dir, "ext4.raw"))
	fs := mustFS(t, bytes.NewReader(b), int64(len(b))).(*ext4FS)
	if _, err := fs.Open("/bin/big"); err != nil {
		t.Fatal(err)
	}
	fs.mapWork.Store(fs.mapWorkLimit())
	fs.opWorkFree = 100 // /fragmented has 1,500 extents
	if _, err := fs.Open("/fragmented"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "work limit") {
		t.Fatalf("Open after the work limit: %v", err)
	}
	if _, err := fs.Open("/bin/big"); err != nil {
		t.Errorf("Open /bin/big (within its allowance) after the pool is spent: %v", err)
	}
	if _, err := fs.Lstat("/a/b/c/d/e/f/g/deep"); err != nil {
		t.Errorf("Lstat /a/b/c/d/e/f/g/deep after the pool is spent: %v", err)
	}
	fs2 := mustFS(t, bytes.NewReader(b), int64(len(b))).(*ext4FS)
	fs2.opWorkFree = 100
	if _, err := fs2.Open("/fragmented"); err != nil {
		t.Fatal(err)
	}
}

// mutatingImage is an in-memory image that another goroutine rewrites while it is read.
type mutatingImage struct {
	mu  sync.RWMutex
	img []byte
}

func (m *mutatingImage) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return bytes.NewReader(m.img).ReadAt(p, off)
}

// TestImageChangingWhileWalked: a goroutine keeps damaging and restoring inode-table and
// directory blocks while the volume is walked 30 times. Every walk must end in time;
// with metadata_csum, an inode or directory block read while damaged fails its checksum
// and is re-read, so an entry that is reported without error carries the true
// attributes, and no name appears that is not in the filesystem.
func TestImageChangingWhileWalked(t *testing.T) {
	dir := images(t)
	img := readAll(t, filepath.Join(dir, "ext4.raw"))
	good, _ := walkAll(t, mustFS(t, bytes.NewReader(img), int64(len(img))))
	var inodeRegions, all []region
	for _, r := range ext4Regions(t, img) {
		if r.name == "inode table" {
			inodeRegions = append(inodeRegions, r)
		}
		if r.name == "inode table" || strings.HasPrefix(r.name, "directory block") {
			all = append(all, r)
		}
	}
	for _, c := range []struct {
		name    string
		regions []region
	}{{"inode table", inodeRegions}, {"inode table and directories", all}} {
		m := &mutatingImage{img: append([]byte(nil), img...)}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(3))
			for {
				select {
				case <-stop:
					return
				default:
				}
				m.mu.Lock()
				undo := damage(m.img, c.regions[rnd.Intn(len(c.regions))], rnd)
				m.mu.Unlock()
				time.Sleep(50 * time.Microsecond)
				m.mu.Lock()
				undo()
				m.mu.Unlock()
			}
		}()
		start := time.Now()
		bad, errs := 0, 0
		for pass := 0; pass < 30; pass++ {
			fs := mustFS(t, m, int64(len(img)))
			err := fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
				if err != nil {
					if errs++; errs <= 3 {
						t.Logf("%s: %s: %v", c.name, p, err)
					}
					return nil
				}
				if g := good[p]; g == nil || (g.Mode != e.Mode || g.Size != e.Size || g.UID != e.UID ||
					g.Inode != e.Inode || g.LinkTarget != e.LinkTarget || !g.Mtime.Equal(e.Mtime)) {
					bad++
					t.Errorf("%s: %s read as %+v, want %+v", c.name, p, e, g)
				}
				return nil
			})
			must(t, err)
		}
		close(stop)
		wg.Wait()
		if d := time.Since(start); d > 60*time.Second {
			t.Errorf("%s: 30 walks took %v", c.name, d)
		}
		t.Logf("%s: 30 walks in %v, %d per-path errors, %d wrong entries", c.name, time.Since(start), errs, bad)
	}
}
