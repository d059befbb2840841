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

// dataAt returns the first stretch of data [d, h) of f at or after offset start, h at
// most end; d is end or more when [start, end) is a hole. ok is false when the file
// system cannot tell (lseek's SEEK_DATA fails otherwise), and when the file no longer
// reaches end (truncated under its mapping: those bytes are unreadable, not zeros).
func dataAt(f *os.File, start, end uint64) (d, h uint64, ok bool) {
	fd := int(f.Fd())
	off, err := unix.Seek(fd, int64(start), unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO), err == nil && uint64(off) >= end:
		// No data in [start, end), or start is past the end of the file.
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || uint64(st.Size) < end {
			return 0, 0, false
		}
		return end, end, true
	case err != nil || off < int64(start):
		return 0, 0, false
	}
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil || hole <= off {
		return uint64(off), end, true
	}
	return uint64(off), min(uint64(hole), end), true
}
