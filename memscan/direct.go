package memscan

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A disk source ("disk:PATH") is the target's RAM file as Domain M sees it inside a
// libvirt VM: a read-only virtio disk over the file (<serial>domainm-view</serial>,
// /dev/disk/by-id/virtio-domainm-view), because libvirt cannot keep an nvdimm out of
// Domain M's migration stream. Mapping or buffered reads of the disk would go through
// Domain M's own page cache, which keeps the first copy of each block while the target
// rewrites its RAM, so every read is a pread with O_DIRECT: offsets and lengths in
// multiples of the device's logical block size, into page-aligned buffers.

// diskChunk bounds one pread and the buffer it needs: a read of any length costs at
// most one chunk per concurrent reader.
const diskChunk = 1 << 20

// DiskMissingError says that the disk is not there (Domain M started without the view
// disk, or udev has not made the by-id link yet). It matches fs.ErrNotExist, so callers
// that wait for a missing RAM file wait for it too.
type DiskMissingError struct {
	Path string
	Err  error
}

func (e *DiskMissingError) Error() string {
	return fmt.Sprintf("disk %s is missing (libvirt: a read-only <disk> over the target's RAM file with <serial>domainm-view</serial>): %v", e.Path, e.Err)
}

func (e *DiskMissingError) Unwrap() error { return e.Err }

// DiskSource is a Source read with O_DIRECT preads from a block device (or a file).
type DiskSource struct {
	path    string
	f       *os.File
	align   int64 // logical block size: O_DIRECT offsets and lengths are multiples of it
	extents []Extent
	ranges  []Range
	bufs    sync.Pool // *[]byte of diskChunk bytes, page-aligned
	// cache holds aligned blocks for reads shorter than one (diskcache.go); nil when
	// the logical block size is larger than a cache block.
	cache    *diskCache
	requests atomic.Uint64 // preads issued
}

var _ Source = (*DiskSource)(nil)

// OpenDisk opens the block device at path with O_DIRECT and lays it out in
// guest-physical memory by l, as the target's RAM file would be.
func OpenDisk(path string, l Layout) (*DiskSource, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	buffered := errors.Is(err, unix.EINVAL)
	if buffered {
		// No O_DIRECT here (a file on tmpfs): its page cache is the file itself.
		f, err = os.Open(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &DiskMissingError{Path: path, Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", path, err)
	}
	size, align, err := diskGeometry(f)
	if fi, serr := f.Stat(); err == nil && buffered && (serr != nil || !fi.Mode().IsRegular()) {
		err = errors.New("it refuses O_DIRECT, and buffered reads of a device go stale")
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk %s: %w", path, err)
	}
	ext, err := l.Extents(size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk %s: %w", path, err)
	}
	d := &DiskSource{path: path, f: f, align: align, extents: ext, ranges: make([]Range, len(ext))}
	for i, e := range ext {
		d.ranges[i] = Range{GPA: e.GPA, Size: e.Size}
	}
	d.bufs.New = func() any { b := alignedBuf(diskChunk); return &b }
	if align <= diskCacheBlock {
		d.cache = newDiskCache()
	}
	return d, nil
}

// diskGeometry returns the size and logical block size of a block device
// (BLKGETSIZE64, BLKSSZGET: stat reports 0 bytes for a device), or of a regular file.
func diskGeometry(f *os.File) (size uint64, align int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if fi.Mode().IsRegular() {
		return uint64(fi.Size()), directAlign, nil
	}
	if fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 {
		return 0, 0, fmt.Errorf("not a block device or regular file (mode %v)", fi.Mode())
	}
	var sz uint64
	if err := ioctlPtr(f, unix.BLKGETSIZE64, unsafe.Pointer(&sz)); err != nil {
		return 0, 0, fmt.Errorf("BLKGETSIZE64: %w", err)
	}
	var lbs int32
	if err := ioctlPtr(f, unix.BLKSSZGET, unsafe.Pointer(&lbs)); err != nil {
		return 0, 0, fmt.Errorf("BLKSSZGET: %w", err)
	}
	// A power of two no larger than a chunk, or the chunk arithmetic below breaks.
	if lbs <= 0 || lbs&(lbs-1) != 0 || lbs > diskChunk {
		return 0, 0, fmt.Errorf("logical block size %d: want a power of two up to %d", lbs, diskChunk)
	}
	return sz, int64(lbs), nil
}

// ioctlPtr runs ioctl(f, req, p) for a request that writes through its argument.
func ioctlPtr(f *os.File, req uint, p unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(p))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// Path returns the device read.
func (d *DiskSource) Path() string { return d.path }

// Ranges returns the guest-physical ranges, sorted by address. Every walk of the
// source (a scan pass, deriving a guest's layout) begins by asking for them, so it also
// empties the small-read cache: nothing read before it is served after it.
func (d *DiskSource) Ranges() []Range {
	d.Invalidate()
	return append([]Range(nil), d.ranges...)
}

// Invalidate empties the small-read cache (diskcache.go): every later read goes to the
// device. Ranges does it too.
func (d *DiskSource) Invalidate() {
	if d.cache != nil {
		d.cache.invalidate()
	}
}

// pread reads len(buf) bytes at device offset off (both aligned) and counts the request.
func (d *DiskSource) pread(buf []byte, off int64) (int, error) {
	d.requests.Add(1)
	return readFull(d.f, buf, off)
}

// ReadAt copies guest memory at gpa into p, straight from the device (a read shorter
// than a cache block through the small-read cache, see Ranges); as MappedFile.ReadAt, a read running past the end of its range returns the bytes up to
// there and an error matching ErrOutOfRange. It is safe for concurrent use.
func (d *DiskSource) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 {
		return 0, fmt.Errorf("disk %s: reading %#x: negative address: %w", d.path, gpa, ErrOutOfRange)
	}
	i := sort.Search(len(d.extents), func(i int) bool { return d.extents[i].GPA+d.extents[i].Size > uint64(gpa) })
	if i == len(d.extents) || uint64(gpa) < d.extents[i].GPA {
		return 0, fmt.Errorf("disk %s: reading %#x: %w", d.path, gpa, ErrOutOfRange)
	}
	e := d.extents[i]
	rel := uint64(gpa) - e.GPA
	want := min(uint64(len(p)), e.Size-rel)
	off := int64(e.Offset + rel)
	done := 0
	if d.cache != nil && len(p) < diskCacheBlock {
		// At most two cache blocks; whatever they cannot give is read directly below.
		for uint64(done) < want {
			pos := off + int64(done)
			blk := pos &^ (diskCacheBlock - 1)
			q := p[done : done+int(min(int64(want)-int64(done), blk+diskCacheBlock-pos))]
			if !d.cache.copyFrom(q, pos) && !d.cache.fill(q, pos, blk, d.pread) {
				break
			}
			done += len(q)
		}
	}
	if uint64(done) < want {
		if n, err := d.readDirect(p[:want], gpa, off, done); err != nil {
			return n, err
		}
	}
	if uint64(len(p)) > want {
		return int(want), fmt.Errorf("disk %s: reading %#x+%#x: past the end of %v: %w", d.path, gpa, len(p), Range{GPA: e.GPA, Size: e.Size}, ErrOutOfRange)
	}
	return int(want), nil
}

// Close closes the device.
func (d *DiskSource) Close() error { return d.f.Close() }

// readDirect reads p[done:] (want = len(p) bytes in all) from device offset off+done in
// aligned chunks; on an error it returns the bytes done and the error.
func (d *DiskSource) readDirect(p []byte, gpa, off int64, done int) (int, error) {
	want := uint64(len(p))
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	buf := *bp
	for uint64(done) < want {
		// One aligned chunk around [off+done, ...).
		pos := off + int64(done)
		start := pos &^ (d.align - 1)
		end := min(start+int64(diskChunk), (off+int64(want)+d.align-1)&^(d.align-1))
		n, err := d.pread(buf[:end-start], start)
		got := max(0, min(int64(n)-(pos-start), int64(want)-int64(done)))
		done += copy(p[done:], buf[pos-start:pos-start+got])
		if err != nil && (err != io.EOF || uint64(done) < want) {
			if errors.Is(err, os.ErrClosed) {
				err = ErrClosed
			}
			return done, fmt.Errorf("disk %s: reading offset %#x (guest-physical %#x): %w", d.path, pos, gpa+int64(done), err)
		}
	}
	return done, nil
}
