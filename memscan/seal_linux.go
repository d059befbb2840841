package memscan

import (
	"os"

	"golang.org/x/sys/unix"
)

// cannotShrink reports whether f's size can never go down while it is mapped: a memfd
// sealed against shrinking (F_SEAL_SHRINK; QEMU's memory-backend-memfd seals its RAM so
// by default, and the file is reachable as /proc/PID/fd/N). Bytes past the end of a
// mapped file are what raise SIGBUS; a hole punched in a memfd reads as zeros. A
// hugetlbfs memfd is excluded: reading a hole there allocates a huge page, and an empty
// pool is a SIGBUS.
func cannotShrink(f *os.File) bool {
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_SHRINK == 0 {
		return false
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Type == unix.HUGETLBFS_MAGIC {
		return false
	}
	return true
}
