package linux

import "fmt"

// leafFunc is called for each present leaf entry of a page-table walk, in virtual
// address order: the virtual address of the page, its physical frame (aligned to the
// page size) and its size (4 KiB, 2 MiB or 1 GiB).
type leafFunc func(va, pa, size uint64)

// ptWalker enumerates the present mappings of a virtual range by reading page tables a
// whole table (4 KiB) at a time, one read per table instead of one per entry and level
// (as Translate does). It holds one table buffer per level, so it is not safe for
// concurrent use. Tables outside RAM are counted in Skipped, not followed; a walk
// reads at most Limit tables (hostile tables can point at each other without end).
type ptWalker struct {
	p       *phys
	levels  int
	buf     [5][4096]byte
	Tables  int // tables read since the walker was made
	Skipped int // table pointers outside RAM, not followed
	Limit   int
	// Visited, when set, collects the physical address of every table read.
	Visited *[]uint64
}

func newPTWalker(p *phys, levels, limit int) *ptWalker {
	return &ptWalker{p: p, levels: levels, Limit: limit}
}

// userTop is the end of the user half of an address space with levels of paging.
func userTop(levels int) uint64 {
	if levels == 5 {
		return 1 << 56
	}
	return 1 << 47
}

// walk calls fn for every present leaf mapping that overlaps [lo, hi) in the address
// space rooted at root.
func (w *ptWalker) walk(root, lo, hi uint64, fn leafFunc) error {
	if w.levels != 4 && w.levels != 5 {
		return fmt.Errorf("paging depth %d: want 4 or 5", w.levels)
	}
	if hi <= lo {
		return nil
	}
	return w.table(root&pteAddrMask, w.levels, 0, lo, hi, fn)
}

func (w *ptWalker) table(table uint64, level int, base, lo, hi uint64, fn leafFunc) error {
	if w.Tables >= w.Limit {
		return fmt.Errorf("more than %d page tables", w.Limit)
	}
	w.Tables++
	if w.Visited != nil {
		*w.Visited = append(*w.Visited, table)
	}
	buf := &w.buf[level-1]
	if err := w.p.read(table, buf[:]); err != nil {
		w.Skipped++
		return nil
	}
	shift := uint(12 + 9*(level-1))
	span := uint64(1) << shift
	for i := range 512 {
		va := base | uint64(i)<<shift
		if level == w.levels && i >= 256 {
			va |= ^uint64(0) << (shift + 9) // the kernel half is sign-extended
		}
		if va+span-1 < lo || va >= hi {
			continue
		}
		e := le.Uint64(buf[8*i:])
		if e&ptePresent == 0 {
			continue
		}
		frame := e & pteAddrMask
		if level == 1 || e&ptePS != 0 && (level == 2 || level == 3) {
			fn(va, frame&^(span-1), span)
			continue
		}
		if e&ptePS != 0 {
			continue // a page-size bit where there can be none: not followed
		}
		if err := w.table(frame, level-1, va, lo, hi, fn); err != nil {
			return err
		}
	}
	return nil
}
