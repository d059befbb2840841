package memscan

import (
	"fmt"
	"io"

	"github.com/domainm/domainm/memscan/elfcore"
	"github.com/domainm/domainm/memscan/internal/mmap"
)

// OpenELF maps an ELF core written by QEMU's dump-guest-memory (taken with paging
// off, so that each PT_LOAD's p_paddr is a guest-physical address) and serves its
// PT_LOAD segments as ranges. A malformed or truncated core gives an error matching
// elfcore.ErrFormat with the byte offset of the problem.
//
// QEMU dumps every RAM-like region of the guest's address space, so the ranges
// include ROM such as the 256 KiB BIOS image below 4 GiB (0xfffc0000 on x86).
// Only the bytes present in the file are served: a segment whose memory size exceeds
// its file size (QEMU never writes one) is served up to its file size.
func OpenELF(path string) (*MappedFile, error) {
	return openMapped(path, func(size uint64, data []byte) ([]Extent, error) {
		// Read the headers through the fault-safe copy: a dump truncated while we
		// parse it must give an error, not SIGBUS.
		core, err := elfcore.Parse(safeReader(data), int64(size))
		if err != nil {
			return nil, err
		}
		var ext []Extent
		for _, s := range core.Loads {
			if s.FileSize == 0 {
				continue
			}
			ext = append(ext, Extent{GPA: s.PAddr, Size: s.FileSize, Offset: s.Offset})
		}
		if len(ext) == 0 {
			return nil, fmt.Errorf("ELF core has no PT_LOAD segment with data (not a memory dump?)")
		}
		return checkExtents(ext, size)
	})
}

// safeReader reads a mapping with mmap.Copy, turning faults into errors.
type safeReader []byte

func (r safeReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(r)) {
		return 0, io.EOF
	}
	n, err := mmap.Copy(p, r[off:])
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
