//go:build linux

package mmap

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mapping is a read-only, shared mapping of a file. The bytes reflect later writes to
// the file by other processes (a running guest). It is unmapped by Close or, as a last
// resort, when the Mapping becomes unreachable; slices from Bytes must not be used
// after that.
type Mapping struct {
	data    []byte
	cleanup runtime.Cleanup
}

// Map maps size bytes of f from offset 0 with PROT_READ and MAP_SHARED. The mapping
// stays valid after f is closed.
func Map(f *os.File, size int64) (*Mapping, error) {
	if size <= 0 {
		return nil, fmt.Errorf("mmap %s: nothing to map (size %d)", f.Name(), size)
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("mmap %s: size %d does not fit this platform", f.Name(), size)
	}
	var data []byte
	var merr error
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", f.Name(), err)
	}
	// Control keeps the descriptor alive for the duration of the call.
	if err := rc.Control(func(fd uintptr) {
		data, merr = unix.Mmap(int(fd), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	}); err != nil {
		return nil, fmt.Errorf("mmap %s: %w", f.Name(), err)
	}
	if merr != nil {
		return nil, &os.PathError{Op: "mmap", Path: f.Name(), Err: merr}
	}
	m := &Mapping{data: data}
	m.cleanup = runtime.AddCleanup(m, func(b []byte) { _ = unix.Munmap(b) }, data)
	return m, nil
}

// Bytes returns the mapped bytes. It returns nil after Close.
func (m *Mapping) Bytes() []byte { return m.data }

// Release tells the kernel that the mapped pages of [off, off+n) are not needed for now
// (MADV_DONTNEED, widened to whole pages): the process stops counting them as resident,
// the page cache keeps them, and a later read maps them again with the file's current
// bytes. A long sequential read of a large mapping (a disk image hashed file by file)
// calls it behind itself so that its resident size stays small. Release must not run
// concurrently with Close; reads of the same range by other goroutines stay valid.
func (m *Mapping) Release(off, n int64) error {
	if m.data == nil || n <= 0 || off < 0 || off >= int64(len(m.data)) {
		return nil
	}
	page := int64(os.Getpagesize())
	start := off &^ (page - 1)
	end := min(off+n, int64(len(m.data)))
	if err := unix.Madvise(m.data[start:end], unix.MADV_DONTNEED); err != nil {
		return fmt.Errorf("madvise: %w", err)
	}
	return nil
}

// Resident reports whether every page of [off, off+n) is in the page cache (mincore),
// so that reading it from the mapping will not wait for the device. Bytes beyond the
// file's end are not resident. Its cost grows with the pages asked about (some 0.1 µs
// each): callers sample.
func (m *Mapping) Resident(off, n int64) (bool, error) {
	if m.data == nil || n <= 0 || off < 0 || off >= int64(len(m.data)) {
		return false, nil
	}
	page := int64(os.Getpagesize())
	start := off &^ (page - 1)
	end := min(off+n, int64(len(m.data)))
	var vec [64]byte
	for start < end {
		k := min(end-start, int64(len(vec))*page)
		_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m.data[start])), uintptr(k), uintptr(unsafe.Pointer(&vec[0])))
		if e != 0 {
			return false, fmt.Errorf("mincore: %w", e)
		}
		for _, b := range vec[:(k+page-1)/page] {
			if b&1 == 0 {
				return false, nil
			}
		}
		start += k
	}
	return true, nil
}

// Close unmaps the file. It must not run concurrently with readers of Bytes.
func (m *Mapping) Close() error {
	if m.data == nil {
		return nil
	}
	m.cleanup.Stop()
	err := unix.Munmap(m.data)
	m.data = nil
	if err != nil {
		return fmt.Errorf("munmap: %w", err)
	}
	return nil
}
