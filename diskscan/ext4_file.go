package diskscan

import (
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/domainm/domainm/internal/mmap"
)

// file reads a regular file's contents: extents are read with one ReadAt per contiguous
// run, holes and uninitialized extents read as zeros. Not safe for concurrent Read calls
// on one file; separate files may be read in parallel.
type file struct {
	fs     *ext4FS
	ino    uint32
	size   int64
	exts   []extent
	inline []byte // contents of an inline-data file
	off    int64
}

func (o *op) openInode(in *inode) (*file, error) {
	if in.fileType() != Regular {
		return nil, fmt.Errorf("inode %d is a %v, not a regular file", in.ino, in.fileType())
	}
	f := &file{fs: o.fs, ino: in.ino, size: in.size}
	if in.flags&flagInlineData != 0 {
		x, err := o.xattrs(in)
		if err != nil {
			return nil, err
		}
		if f.inline, err = o.fs.inlineData(in, x); err != nil {
			return nil, err
		}
		return f, nil
	}
	exts, err := o.mapBlocks(in)
	if err != nil {
		return nil, err
	}
	f.exts = exts
	return f, nil
}

// ReadAt reads file bytes at off.
func (f *file) ReadAt(p []byte, off int64) (n int, err error) {
	defer recoverCorrupt(&err, "ext4 file")
	if off < 0 {
		return 0, fmt.Errorf("inode %d: negative offset", f.ino)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), f.size-off))
	if f.inline != nil {
		n := copy(p[:want], f.inline[off:])
		return f.eof(n, len(p))
	}
	bs := f.fs.bs
	done := 0
	for done < want {
		pos := off + int64(done)
		lblk := uint64(pos / bs)
		i := sort.Search(len(f.exts), func(i int) bool { return f.exts[i].lblk+f.exts[i].n > lblk })
		rest := want - done
		if i == len(f.exts) || f.exts[i].lblk > lblk { // hole up to the next extent
			if i < len(f.exts) {
				rest = int(min(int64(rest), int64(f.exts[i].lblk)*bs-pos))
			}
			clear(p[done : done+rest])
			done += rest
			continue
		}
		e := f.exts[i]
		rest = int(min(int64(rest), int64(e.lblk+e.n)*bs-pos))
		if e.uninit {
			clear(p[done : done+rest])
		} else {
			phys := int64(e.pblk)*bs + pos - int64(e.lblk)*bs
			if _, err := f.fs.dev.ReadAt(p[done:done+rest], phys); err != nil {
				return done, fmt.Errorf("reading inode %d at volume offset %#x: %w", f.ino, phys, err)
			}
		}
		done += rest
	}
	return f.eof(done, len(p))
}

func (f *file) eof(n, asked int) (int, error) {
	if n < asked {
		return n, io.EOF
	}
	return n, nil
}

func (f *file) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// readChunk is the size of the reads WriteTo issues: large enough to stream an extent at
// disk speed, small enough to keep memory per open file bounded.
const readChunk = 1 << 20

// WriteTo lets io.Copy stream the file in large chunks instead of its 32 KiB buffer.
//
// On a raw image file that could be mapped (see Image), extents are handed to w straight
// from the mapping, without the copy a pread makes: w gets at most mapChunk bytes per
// call, must not keep p (as io.Writer says) and must not modify it. A memory fault
// while w reads them (the image truncated under the mapping, an I/O error on NFS) ends
// WriteTo with an error naming the volume offset, as a failed read would; the process
// never gets the SIGBUS.
func (f *file) WriteTo(w io.Writer) (int64, error) {
	if f.inline == nil && f.fs.mem != nil {
		return f.writeMapped(w)
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := (*bp)[:min(readChunk, max(f.size-f.off, 1))]
	var total int64
	for {
		n, err := f.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (f *file) Close() error { return nil }

// readBufs holds WriteTo's buffers (readChunk bytes): hashing a tree file by file must
// not allocate and clear a buffer per file.
var readBufs = sync.Pool{New: func() any { b := make([]byte, readChunk); return &b }}

// mapChunk bounds the bytes of one Write from the mapping: the writer can stop between
// chunks (a cancelled context), and the pages are released behind it.
const mapChunk = 1 << 20

// releaseEvery is how many bytes are read from the mapping (by all readers of an FS)
// between two releases of its pages: the process's resident size grows by at most
// about that much, and the cost of unmapping is paid in batches (one madvise per file
// cost more CPU than the preads it replaced). 32 MiB added ~65 MB to a check's peak
// resident size, 8 MiB ~7 MB.
const releaseEvery = 8 << 20

// releaseMapped counts n bytes read from the mapping and releases all its pages every
// releaseEvery bytes. A reader in the middle of a piece then faults its pages in again.
func (fs *ext4FS) releaseMapped(n int64) {
	if fs.memRead.Add(n) < releaseEvery {
		return
	}
	fs.memRead.Store(0)
	_ = fs.mem.Release(fs.memBase, fs.memLimit)
}

// Contents in the page cache are read from the mapping (no copy), those that are not
// with preads. A page fault that waits for the device holds its thread and the Go
// processor it runs on (the walk, whose metadata reads start the kernel's readahead,
// then waits too), with one read-around in flight; a pread lets the scheduler run
// other goroutines meanwhile and feeds the kernel's sequential readahead. Hashing an
// uncached 7.6 GB image from the mapping took 77 s against 64 s with preads; a cached
// one costs less CPU mapped. Before a piece is read from the mapping, the page cache is
// asked (mincore) about its last page, which readahead reaches last; a piece found
// uncached makes its region of the volume (residentRegion bytes) read with preads for
// the rest of the walk, without asking again.
const (
	residentRegionShift = 23 // 8 MiB regions
	maxResidentRegions  = 1 << 16
)

// readsMapped reports whether the n bytes at volume offset phys (inside the mapping)
// are to be read from the mapping: whether they are in the page cache, and no earlier
// piece of their region was found missing in this walk. Without fs.resident (tests
// clear it) everything is.
func (fs *ext4FS) readsMapped(phys, n int64) bool {
	if fs.resident == nil {
		return true
	}
	if fs.walkPreads.Load() {
		return false
	}
	i := phys >> fs.residentShift
	if i < 0 || i >= int64(len(fs.resident)) {
		return false
	}
	ep := fs.residentEpoch.Load()
	if ep != 0 && fs.resident[i].Load() == ep {
		return false
	}
	ok, err := fs.mem.Resident(fs.memBase+phys+n-1, 1)
	if !ok || err != nil {
		fs.resident[i].Store(ep)
		return false
	}
	return true
}

// coldSamples is how many pages of the mapped volume startWalk asks the page cache
// about.
const coldSamples = 1024

// startWalk decides, when a walk begins, whether it reads file contents from the
// mapping or with preads, and forgets which regions the last walk found uncached. On
// an uncached image the per-piece test above rarely switches to preads: the walk's own
// metadata reads start the kernel's readahead, which brings file contents into the
// page cache before they are hashed (2011 of 2044 MB of the bench image found cached),
// often still being read from the device, and faults on such pages wait while holding
// a Go processor. Hashing the uncached 7.6 GB bench image that way took 45-69 s, with
// preads only 42-49 s. So the page cache is sampled once (coldSamples pages evenly
// over the volume, some 0.5 ms of mincore): when fewer than half of the volume's used
// blocks (superblock's free count) appear cached, the whole walk reads with preads;
// otherwise from the mapping, region by region as above. The guest controls the free
// count: a wrong one only picks the slower way of reading the same bytes.
func (fs *ext4FS) startWalk() {
	fs.residentEpoch.Add(1) // what was (not) cached at the last walk may have changed
	if fs.resident == nil {
		fs.walkPreads.Store(false)
		return
	}
	n := int64(coldSamples)
	step := fs.memLimit / n
	if page := int64(os.Getpagesize()); step < page {
		step, n = page, (fs.memLimit+page-1)/page
	}
	cached := int64(0)
	for i := range n {
		if ok, err := fs.mem.Resident(fs.memBase+i*step+step/2, 1); ok && err == nil {
			cached++
		}
	}
	fs.walkPreads.Store(float64(cached) < fs.usedFraction*float64(n)/2)
}

// zeros are written for holes and uninitialized extents.
var zeros [64 << 10]byte

// writeMapped is WriteTo from the image mapping; see WriteTo. Pieces the mapping cannot
// serve (blocks with a replayed journal copy, bytes beyond the mapped image) are read
// through ReadAt, so that the bytes are those a Read would return.
func (f *file) writeMapped(w io.Writer) (total int64, err error) {
	defer recoverCorrupt(&err, "ext4 file")
	fs := f.fs
	bs := fs.bs
	mem := fs.mem.Bytes()
	var bp *[]byte
	defer func() {
		if bp != nil {
			readBufs.Put(bp)
		}
	}()
	write := func(p []byte) error {
		n, err := w.Write(p)
		total += int64(n)
		f.off += int64(n)
		if err == nil && n < len(p) {
			err = io.ErrShortWrite
		}
		return err
	}
	for f.off < f.size {
		pos := f.off
		lblk := uint64(pos / bs)
		n := min(f.size-pos, mapChunk)
		i := sort.Search(len(f.exts), func(i int) bool { return f.exts[i].lblk+f.exts[i].n > lblk })
		var e extent
		zero := i == len(f.exts) || f.exts[i].lblk > lblk
		if zero { // a hole up to the next extent
			if i < len(f.exts) {
				n = min(n, int64(f.exts[i].lblk)*bs-pos)
			}
		} else {
			e = f.exts[i]
			n = min(n, int64(e.lblk+e.n)*bs-pos)
			zero = e.uninit
		}
		if zero {
			for n > 0 {
				k := min(n, int64(len(zeros)))
				if err := write(zeros[:k]); err != nil {
					return total, err
				}
				n -= k
			}
			continue
		}
		phys := int64(e.pblk)*bs + pos - int64(e.lblk)*bs
		if phys < 0 || phys+n > fs.memLimit || (fs.ov != nil && fs.ov.covers(uint64(phys/bs), uint64((phys%bs+n+bs-1)/bs))) || !fs.readsMapped(phys, n) {
			if bp == nil {
				bp = readBufs.Get().(*[]byte)
			}
			buf := *bp
			k, rerr := f.ReadAt(buf[:n], pos)
			fs.bytesRead.Add(int64(k))
			if k > 0 {
				if err := write(buf[:k]); err != nil {
					return total, err
				}
			}
			if rerr != nil && rerr != io.EOF {
				return total, rerr
			}
			if k == 0 {
				return total, io.ErrUnexpectedEOF
			}
			continue
		}
		at := fs.memBase + phys
		var werr error
		if ferr := mmap.Do(func() { werr = write(mem[at : at+n : at+n]) }); ferr != nil {
			return total, fmt.Errorf("reading inode %d at volume offset %#x: %w", f.ino, phys, ferr)
		}
		fs.bytesMapped.Add(n)
		// The kernel maps up to 64 KiB around each faulting page (fault-around): count
		// that, so that the resident pages stay within about releaseEvery.
		fs.releaseMapped((n + 64<<10 - 1) &^ (64<<10 - 1))
		if werr != nil {
			return total, werr
		}
	}
	return total, nil
}
