package linux

import (
	"errors"
	"fmt"
)

// x86-64 page-table entry bits.
const (
	ptePresent  = 1 << 0
	ptePS       = 1 << 7                // large page (PDPTE: 1 GiB, PDE: 2 MiB)
	pteAddrMask = 0x000f_ffff_ffff_f000 // bits 12..51
)

// ErrNotMapped is returned for a virtual address with no present mapping.
var ErrNotMapped = errors.New("virtual address not mapped")

// AddressSpace translates virtual addresses through x86-64 page tables rooted at
// Root (the physical address of the PML4, or of the PML5 with Levels 5).
type AddressSpace struct {
	p      *phys
	Root   uint64
	Levels int // 4 or 5
}

// Mapping is one translation: the physical address and the size of the page that holds it.
type Mapping struct {
	PA       uint64
	PageSize uint64 // 4 KiB, 2 MiB or 1 GiB
}

// canonical says whether va is canonical for the paging depth.
func canonical(va uint64, levels int) bool {
	bits := uint(48)
	if levels == 5 {
		bits = 57
	}
	top := int64(va) >> (bits - 1)
	return top == 0 || top == -1
}

// Translate walks the page tables for va. It never reads a table outside RAM and stops
// after Levels steps.
func (as *AddressSpace) Translate(va uint64) (Mapping, error) {
	if as.Levels != 4 && as.Levels != 5 {
		return Mapping{}, fmt.Errorf("paging depth %d: want 4 or 5", as.Levels)
	}
	if !canonical(va, as.Levels) {
		return Mapping{}, fmt.Errorf("%#x: non-canonical for %d-level paging: %w", va, as.Levels, ErrNotMapped)
	}
	table := as.Root &^ 0xfff
	for level := as.Levels; level >= 1; level-- {
		shift := uint(12 + 9*(level-1))
		idx := (va >> shift) & 0x1ff
		ea := table + idx*8
		e, err := as.p.u64(ea)
		if err != nil {
			return Mapping{}, fmt.Errorf("%#x: level-%d entry at %#x: %w", va, level, ea, err)
		}
		if e&ptePresent == 0 {
			return Mapping{}, fmt.Errorf("%#x: level-%d entry %#x at %#x not present: %w", va, level, e, ea, ErrNotMapped)
		}
		frame := e & pteAddrMask
		if level == 1 || (e&ptePS != 0 && (level == 2 || level == 3)) {
			size := uint64(1) << shift
			pa := frame&^(size-1) | va&(size-1)
			return Mapping{PA: pa, PageSize: size}, nil
		}
		if e&ptePS != 0 {
			return Mapping{}, fmt.Errorf("%#x: level-%d entry %#x at %#x has the page-size bit", va, level, e, ea)
		}
		if !as.p.inRAM(frame, 4096) {
			return Mapping{}, fmt.Errorf("%#x: level-%d entry %#x at %#x points to a table at %#x outside RAM", va, level, e, ea, frame)
		}
		table = frame
	}
	panic("unreachable")
}

// Read reads len(b) bytes at virtual address va, page by page; every page must map
// into RAM.
func (as *AddressSpace) Read(va uint64, b []byte) error {
	for done := 0; done < len(b); {
		m, err := as.Translate(va + uint64(done))
		if err != nil {
			return err
		}
		n := min(uint64(len(b)-done), m.PageSize-(m.PA&(m.PageSize-1)))
		if err := as.p.read(m.PA, b[done:done+int(n)]); err != nil {
			return fmt.Errorf("virtual %#x: %w", va+uint64(done), err)
		}
		done += int(n)
	}
	return nil
}
