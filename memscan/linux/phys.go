package linux

import (
	"encoding/binary"
	"fmt"

	"github.com/domainm/domainm/memscan"
)

// phys reads guest-physical memory, refusing anything outside the source's RAM.
type phys struct {
	src    memscan.Source
	ranges []memscan.Range
}

func newPhys(src memscan.Source) *phys { return &phys{src: src, ranges: src.Ranges()} }

// inRAM says whether [pa, pa+n) lies inside one range.
func (p *phys) inRAM(pa, n uint64) bool {
	if pa+n < pa {
		return false
	}
	for _, r := range p.ranges {
		if pa >= r.GPA && pa+n <= r.End() {
			return true
		}
	}
	return false
}

func (p *phys) read(pa uint64, b []byte) error {
	if !p.inRAM(pa, uint64(len(b))) {
		return fmt.Errorf("guest-physical %#x+%#x is outside RAM", pa, len(b))
	}
	if _, err := p.src.ReadAt(b, int64(pa)); err != nil {
		return fmt.Errorf("reading guest-physical %#x+%#x: %w", pa, len(b), err)
	}
	return nil
}

// holePiece is the piece readAll asks about holes.
const holePiece = 64 << 10

// readAll is read for the searches over all memory (kallsyms, linux_banner): a 64 KiB
// piece that is one hole of the source (the never-written pages of a RAM file on tmpfs,
// memscan.MappedFile.FirstData) is zeros, not read, since reading it would allocate it
// on the host; a piece with data is read whole.
func (p *phys) readAll(pa uint64, b []byte) error {
	h, ok := p.src.(interface{ FirstData(gpa uint64, n int) int })
	if !ok || !p.inRAM(pa, uint64(len(b))) {
		return p.read(pa, b)
	}
	for off := 0; off < len(b); off += holePiece {
		c := b[off:min(off+holePiece, len(b))]
		if h.FirstData(pa+uint64(off), len(c)) >= len(c) {
			clear(c)
			continue
		}
		if err := p.read(pa+uint64(off), c); err != nil {
			return err
		}
	}
	return nil
}

func (p *phys) u64(pa uint64) (uint64, error) {
	var b [8]byte
	if err := p.read(pa, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}
