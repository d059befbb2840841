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

func (p *phys) u64(pa uint64) (uint64, error) {
	var b [8]byte
	if err := p.read(pa, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}
