package memscan

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// holesKnown reports whether f's holes can be asked with lseek's SEEK_DATA and matter:
// a file on tmpfs (/dev/shm, a memfd), where QEMU keeps guest RAM and where reading a
// hole through a shared mapping allocates a page for it. Other files are read as they
// are: a sysfs file (an ivshmem BAR's resource2) is a regular file whose lseek knows
// nothing of its memory, and a hole of a dump on disk costs no disk when read.
func holesKnown(f *os.File) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(int(f.Fd()), &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// firstData returns where the first data of f at or after offset start lies, as an
// offset from start, or end-start when [start, end) is one hole (it reads as zeros);
// 0 when it cannot tell. Only SEEK_DATA is asked: from a hole the kernel skips to the
// next data quickly, while SEEK_HOLE would walk every page of data up to the next hole.
// A file that no longer reaches end (truncated under its mapping) has no hole there:
// those bytes are unreadable.
func firstData(f *os.File, start, end uint64) uint64 {
	fd := int(f.Fd())
	off, err := unix.Seek(fd, int64(start), unix.SEEK_DATA)
	switch {
	case err == nil && uint64(off) >= start && uint64(off) < end:
		return uint64(off) - start
	case !(errors.Is(err, unix.ENXIO) || err == nil && uint64(off) >= end):
		return 0
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || uint64(st.Size) < end {
		return 0
	}
	return end - start
}
