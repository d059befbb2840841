package linux

import (
	"fmt"
	"sort"
)

// Limits of a reverse-map build: a hostile guest cannot make it unbounded.
const (
	maxRmapTables = 1 << 20 // page tables visited over all processes
	maxRmapLeaves = 1 << 26 // user pages recorded
)

// UserMapping is one process's mapping of a physical page.
type UserMapping struct {
	PID  int
	Comm string
	VA   uint64 // virtual address of the page in the process
}

// ReverseMap attributes physical pages to the processes that map them, built from the
// processes' page tables (user half only: the kernel half is shared by all).
type ReverseMap struct {
	pages map[uint64][]UserMapping // physical 4 KiB frame -> mappings
	// The kernel image's text, rodata, data and bss as physical ranges; its init
	// sections and the gaps between are freed after boot and reused.
	kernel         [][2]uint64
	Tables, Leaves int // page tables walked and leaf entries recorded
}

// BuildReverseMap walks the user half of every process's page tables. Large pages are
// recorded per 4 KiB frame. Tables outside RAM are skipped, not followed.
func (in *Inspector) BuildReverseMap(procs []Process) (*ReverseMap, error) {
	rm := &ReverseMap{pages: map[uint64][]UserMapping{}}
	for _, r := range [][2]string{{"_text", "_etext"}, {"__start_rodata", "__end_rodata"}, {"_sdata", "_edata"}, {"__bss_start", "__bss_stop"}} {
		s, err1 := in.K.Syms.Addr(r[0])
		e, err2 := in.K.Syms.Addr(r[1])
		if err1 != nil || err2 != nil || s < in.K.TextVA || e < s || e-in.K.TextVA > kernelImageSpan {
			continue
		}
		rm.kernel = append(rm.kernel, [2]uint64{in.K.TextPA + (s - in.K.TextVA), in.K.TextPA + (e - in.K.TextVA)})
	}
	for _, p := range procs {
		if p.PGD == 0 {
			continue
		}
		top := 256 // user half of a PML4 (or PML5)
		if err := rm.walk(in.K.p, p, p.PGD, in.K.Levels, 0, top); err != nil {
			return nil, fmt.Errorf("pid %d (%s) page tables at %#x: %w", p.PID, p.Comm, p.PGD, err)
		}
	}
	return rm, nil
}

func (rm *ReverseMap) walk(ph *phys, p Process, table uint64, level int, base uint64, entries int) error {
	if rm.Tables++; rm.Tables > maxRmapTables {
		return fmt.Errorf("more than %d page tables", maxRmapTables)
	}
	var buf [4096]byte
	if err := ph.read(table, buf[:]); err != nil {
		return nil // a table outside RAM is not followed
	}
	shift := uint(12 + 9*(level-1))
	for i := 0; i < entries; i++ {
		e := le.Uint64(buf[8*i:])
		if e&ptePresent == 0 {
			continue
		}
		va := base | uint64(i)<<shift
		frame := e & pteAddrMask
		leaf := level == 1 || (e&ptePS != 0 && (level == 2 || level == 3))
		if !leaf {
			if e&ptePS != 0 {
				continue
			}
			if err := rm.walk(ph, p, frame, level-1, va, 512); err != nil {
				return err
			}
			continue
		}
		size := uint64(1) << shift
		frame &^= size - 1
		for off := uint64(0); off < size; off += 4096 {
			if !ph.inRAM(frame+off, 4096) {
				break
			}
			if rm.Leaves++; rm.Leaves > maxRmapLeaves {
				return fmt.Errorf("more than %d mapped pages", maxRmapLeaves)
			}
			rm.pages[frame+off] = append(rm.pages[frame+off], UserMapping{PID: p.PID, Comm: p.Comm, VA: va + off})
		}
	}
	return nil
}

// Attribution says who holds a physical address.
type Attribution struct {
	Processes []UserMapping // VA includes the offset in the page
	Kernel    bool          // inside the kernel image's text, rodata, data or bss
}

// Attribute returns the processes mapping pa (sorted by pid) and whether pa is in the
// kernel image (text, rodata, data, bss; not its freed init memory).
func (rm *ReverseMap) Attribute(pa uint64) Attribution {
	var a Attribution
	for _, m := range rm.pages[pa&^0xfff] {
		m.VA |= pa & 0xfff
		a.Processes = append(a.Processes, m)
	}
	sort.Slice(a.Processes, func(i, j int) bool { return a.Processes[i].PID < a.Processes[j].PID })
	for _, k := range rm.kernel {
		if pa >= k[0] && pa < k[1] {
			a.Kernel = true
		}
	}
	return a
}
