package memscan

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/domainm/domainm/memscan/internal/mmap"
)

// MappedFile is a Source backed by a memory-mapped file: a QEMU RAM file, an ivshmem
// BAR (sysfs resource2, which must be mapped: read() on it fails with EIO), a raw
// dump, or the segments of an ELF core. The mapping is PROT_READ and MAP_SHARED, so
// reads see a running guest's current memory.
//
// ReadAt is safe for concurrent use and returns an error, not a crash, when the file
// shrinks under the mapping. Views from Slice are valid until Close and must not be
// used concurrently with it.
type MappedFile struct {
	path    string
	extents []Extent // sorted by GPA, non-overlapping, inside the file
	ranges  []Range

	mu   sync.RWMutex // guards data against Close
	m    *mmap.Mapping
	data []byte
	// noShrink: the file cannot shrink (cannotShrink), so its mapping cannot fault and
	// may be handed to libyara in place (InPlace).
	noShrink bool
	// file is the open file, kept for its holes (FirstData); nil when they are not asked
	// (holesKnown: a file on tmpfs) or it is closed. Guarded by mu as data is.
	file *os.File
}

var _ Source = (*MappedFile)(nil)

// ErrClosed is returned by reads from a closed source.
var ErrClosed = errors.New("memory source is closed")

// OpenFile maps the file at path and lays it out in guest-physical memory by l.
func OpenFile(path string, l Layout) (*MappedFile, error) {
	return openMapped(path, func(size uint64, _ []byte) ([]Extent, error) {
		return l.Extents(size)
	})
}

// openMapped maps path and asks layout for the extents, given the file size and the
// mapped bytes.
func openMapped(path string, layout func(size uint64, data []byte) ([]Extent, error)) (*MappedFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	size, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	m, err := mmap.Map(f, size)
	if err != nil {
		return nil, err
	}
	ext, err := layout(uint64(size), m.Bytes())
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	mf := &MappedFile{path: path, extents: ext, m: m, data: m.Bytes(), noShrink: cannotShrink(f)}
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && holesKnown(f) {
		mf.file, keep = f, true
	}
	mf.ranges = make([]Range, len(ext))
	for i, e := range ext {
		mf.ranges[i] = Range{GPA: e.GPA, Size: e.Size}
	}
	return mf, nil
}

// fileSize returns the size of a regular file, or of a device by seeking to its end
// (sysfs resource files report their BAR size in stat).
func fileSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.IsDir() {
		return 0, fmt.Errorf("%s is a directory", f.Name())
	}
	if fi.Mode().IsRegular() || fi.Size() > 0 {
		return fi.Size(), nil
	}
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("finding the size of %s: %w", f.Name(), err)
	}
	return n, nil
}

// Path returns the mapped file's name.
func (f *MappedFile) Path() string { return f.path }

// Ranges returns the guest-physical ranges, sorted by address.
func (f *MappedFile) Ranges() []Range { return append([]Range(nil), f.ranges...) }

// Extents returns how file offsets map to guest-physical addresses.
func (f *MappedFile) Extents() []Extent { return append([]Extent(nil), f.extents...) }

// find returns the extent holding gpa.
func (f *MappedFile) find(gpa uint64) (Extent, bool) {
	i := sort.Search(len(f.extents), func(i int) bool { return f.extents[i].GPA+f.extents[i].Size > gpa })
	if i == len(f.extents) || gpa < f.extents[i].GPA {
		return Extent{}, false
	}
	return f.extents[i], true
}

// ReadAt copies guest memory at gpa into p. A read that starts in a range but runs
// past its end returns the bytes up to the end and an error matching ErrOutOfRange.
func (f *MappedFile) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 {
		return 0, fmt.Errorf("reading %#x: negative address: %w", gpa, ErrOutOfRange)
	}
	e, ok := f.find(uint64(gpa))
	if !ok {
		return 0, fmt.Errorf("reading %#x: %w", gpa, ErrOutOfRange)
	}
	start := e.Offset + (uint64(gpa) - e.GPA)
	avail := e.Offset + e.Size - start
	want := uint64(len(p))
	short := want > avail
	if short {
		want = avail
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.data == nil {
		return 0, ErrClosed
	}
	n, err := mmap.Copy(p[:want], f.data[start:start+want])
	if err != nil {
		return 0, fmt.Errorf("reading %#x from %s: %w", gpa, f.path, err)
	}
	if short {
		return n, fmt.Errorf("reading %#x+%d: range ends at %#x: %w", gpa, len(p), e.GPA+e.Size, ErrOutOfRange)
	}
	return n, nil
}

// InPlace reports whether the mapping can be scanned in place, by C code too: the file
// cannot shrink (a memfd sealed with F_SEAL_SHRINK, not on hugetlbfs), so reading the
// mapping cannot fault. Other files can be truncated under the mapping, and a fault
// inside libyara would kill the process: their bytes are copied (ReadAt) first.
func (f *MappedFile) InPlace() bool { return f.noShrink }

// View calls fn with the n mapped bytes at gpa, in place, for the scan driver's zero
// and change checks, which need no copy. The bytes must lie in one extent. A memory
// fault while fn runs (the file shrank under the mapping) is returned as an error, so
// fn must be Go code and must not keep the slice; bytes handed to libyara are copied
// with ReadAt instead, unless InPlace reports true.
func (f *MappedFile) View(gpa int64, n int, fn func([]byte)) error {
	if gpa < 0 || n < 0 {
		return fmt.Errorf("viewing %#x+%d: %w", gpa, n, ErrOutOfRange)
	}
	e, ok := f.find(uint64(gpa))
	if !ok || uint64(gpa)+uint64(n) > e.GPA+e.Size {
		return fmt.Errorf("viewing %#x+%d: %w", gpa, n, ErrOutOfRange)
	}
	start := e.Offset + (uint64(gpa) - e.GPA)
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.data == nil {
		return ErrClosed
	}
	if err := mmap.Do(func() { fn(f.data[start : start+uint64(n)]) }); err != nil {
		return fmt.Errorf("viewing %#x from %s: %w", gpa, f.path, err)
	}
	return nil
}

// FirstData returns where the first data at or after gpa lies within [gpa, gpa+n) (in
// one extent), as an offset from gpa, or n when those bytes are one hole of a sparse
// file (never written, or punched): they read as zeros. Reading a hole through the
// mapping would store it: tmpfs (/dev/shm, memfd) allocates a page for every read fault
// on a hole of a shared mapping, so scanning a QEMU RAM file would give the host a page
// for every page the guest never touched. Only files on tmpfs are asked (holesKnown);
// for others, and when it cannot tell, FirstData is 0.
func (f *MappedFile) FirstData(gpa uint64, n int) int {
	e, ok := f.find(gpa)
	if !ok || n <= 0 || gpa+uint64(n) > e.GPA+e.Size {
		return 0
	}
	start := e.Offset + (gpa - e.GPA)
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.file == nil {
		return 0
	}
	return int(firstData(f.file, start, start+uint64(n)))
}

// Close unmaps the file.
func (f *MappedFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data = nil
	if f.file != nil {
		f.file.Close()
		f.file = nil
	}
	if f.m == nil {
		return nil
	}
	err := f.m.Close()
	f.m = nil
	return err
}
