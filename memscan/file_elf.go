package memscan

import (
	"bytes"
	"fmt"

	"github.com/domainm/domainm/memscan/elfcore"
)

// OpenELF maps an ELF core written by QEMU's dump-guest-memory (taken with paging
// off, so that each PT_LOAD's p_paddr is a guest-physical address) and serves its
// PT_LOAD segments as ranges. A malformed or truncated core gives an error matching
// elfcore.ErrFormat with the byte offset of the problem.
//
// Only the bytes present in the file are served: a segment whose memory size exceeds
// its file size (QEMU never writes one) is served up to its file size.
func OpenELF(path string) (*MappedFile, error) {
	return openMapped(path, func(size uint64, data []byte) ([]Extent, error) {
		// The mapping is of a file that is not expected to change; a dump that is
		// truncated while being parsed faults, which mmap.Copy would catch, but the
		// header is small and read once here.
		core, err := elfcore.Parse(bytes.NewReader(data), int64(size))
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
