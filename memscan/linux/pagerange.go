package linux

import "fmt"

// pageRange calls fn for every present leaf mapping that overlaps [lo, hi) in the
// address space, in address order, with the page's virtual address, physical frame
// (aligned to the page size) and size. It reads each table once (4 KiB), skips tables
// outside RAM (as Translate refuses them) and reads at most limit tables.
func (as *AddressSpace) pageRange(lo, hi uint64, limit int, fn func(va, pa, size uint64)) error {
	if as.Levels != 4 && as.Levels != 5 {
		return fmt.Errorf("paging depth %d: want 4 or 5", as.Levels)
	}
	if hi <= lo {
		return nil
	}
	n := 0
	return as.pageTable(as.Root&pteAddrMask, as.Levels, 0, lo, hi, &n, limit, fn)
}

func (as *AddressSpace) pageTable(table uint64, level int, base, lo, hi uint64, n *int, limit int, fn func(va, pa, size uint64)) error {
	if *n >= limit {
		return fmt.Errorf("more than %d page tables", limit)
	}
	*n++
	var buf [4096]byte
	if err := as.p.read(table, buf[:]); err != nil {
		return nil // a table outside RAM is not followed
	}
	shift := uint(12 + 9*(level-1))
	span := uint64(1) << shift
	for i := range 512 {
		va := base | uint64(i)<<shift
		if level == as.Levels && i >= 256 {
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
		if err := as.pageTable(frame, level-1, va, lo, hi, n, limit, fn); err != nil {
			return err
		}
	}
	return nil
}
