package linux

import (
	"context"
	"fmt"
	"sort"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
)

// Bounds of the seams one snapshot collects: a hostile guest cannot make them unbounded.
const (
	maxSeams         = 1 << 21
	maxSeamHolders   = detectors.MaxMatchProcesses
	vmallocSize4     = 32 << 40    // VMALLOC_SIZE_TB (4-level paging)
	vmallocSize5     = 12800 << 40 // VMALLOC_SIZE_TB_L5
	defaultVmallocVA = 0xffffc90000000000
)

// Where a seam lies when it is the kernel's (SeamHolder.Kernel).
const (
	KernelVmalloc = "vmalloc" // the vmalloc area (task stacks, vmalloc'd buffers, ...)
)

// SeamHolder is an address space in which a seam lies: a process (PID, Comm) or the
// kernel (Kernel is KernelModule, with Module, or KernelVmalloc, with the Module that
// allocated the area when known). VA is the seam's virtual address there: the first
// byte of the right-hand page.
type SeamHolder struct {
	PID    int
	Comm   string
	Kernel string
	Module string
	VA     uint64
}

// Seams are the seams of every address space of a snapshot, each with the address
// spaces that have it (at most maxSeamHolders listed; Count has them all).
type Seams struct {
	List    []memscan.Seam // in physical order
	Holders map[memscan.Seam][]SeamHolder
	Count   map[memscan.Seam]int
	Tables  int // page tables read
}

// seamTracker turns one address space's leaf mappings, in virtual order, into seams.
type seamTracker struct {
	s      *Seams
	p      *phys
	holder SeamHolder
	prevVA uint64
	prevPA uint64
	have   bool
	err    error
}

func (t *seamTracker) leaf(va, pa, size uint64) {
	if t.have && t.prevVA == va && t.prevPA != pa && t.err == nil &&
		t.p.inRAM(t.prevPA-memscan.PageSize, memscan.PageSize) && t.p.inRAM(pa, memscan.PageSize) {
		sm := memscan.Seam{Left: t.prevPA - memscan.PageSize, Right: pa}
		n, seen := t.s.Count[sm]
		if !seen {
			if len(t.s.List) >= maxSeams {
				t.err = fmt.Errorf("more than %d seams", maxSeams)
				return
			}
			t.s.List = append(t.s.List, sm)
		}
		t.s.Count[sm] = n + 1
		if n < maxSeamHolders {
			h := t.holder
			h.VA = va
			t.s.Holders[sm] = append(t.s.Holders[sm], h)
		}
	}
	t.prevVA, t.prevPA, t.have = va+size, pa+size, true
}

// start begins another address space (or another range of one).
func (t *seamTracker) start(h SeamHolder) { t.holder, t.have = h, false }

// Seams walks every process's user address space, the modules' memory and the vmalloc
// area, and returns their seams: page boundaries whose two sides are not adjacent in
// guest-physical memory. Seams shared by several address spaces (a library's pages)
// are listed once.
func (s *Snapshot) Seams() (*Seams, error) { return s.seams(newFrameSet(nil)) }

// seams walks like Seams and, in the same walk, looks for the frames of fs.
func (s *Snapshot) seams(fs *frameSet) (*Seams, error) {
	k := s.g.In.K
	out := &Seams{Holders: map[memscan.Seam][]SeamHolder{}, Count: map[memscan.Seam]int{}}
	w := newPTWalker(k.p, k.Levels, maxSnapshotTables)
	tr := &seamTracker{s: out, p: k.p}
	space := func(h SeamHolder, root, lo, hi uint64, also func(va, pa, size uint64)) error {
		runs, err := s.g.spaces.get(w, root, lo, hi)
		if err != nil {
			return err
		}
		tr.start(h)
		for _, r := range runs {
			tr.leaf(r.va, r.pa, r.size)
			if also != nil {
				also(r.va, r.pa, r.size)
			}
		}
		return tr.err
	}
	for _, t := range s.Tasks {
		var also func(va, pa, size uint64)
		if len(fs.frames) > 0 {
			also = func(va, pa, size uint64) { fs.leaf(t, va, pa, size) }
		}
		if err := space(SeamHolder{PID: t.PID, Comm: t.Comm}, t.PGD, 0, userTop(k.Levels), also); err != nil {
			return nil, fmt.Errorf("pid %d (%s) page tables at %#x: %w", t.PID, t.Comm, t.PGD, err)
		}
	}
	for _, m := range s.Modules {
		if err := space(SeamHolder{Kernel: KernelModule, Module: m.Module}, k.PGD, m.VA, m.VA+m.Size, nil); err != nil {
			return nil, fmt.Errorf("module %s page tables: %w", m.Module, err)
		}
	}
	lo, size := s.vmallocArea()
	if err := space(SeamHolder{Kernel: KernelVmalloc}, k.PGD, lo, lo+size, nil); err != nil {
		return nil, fmt.Errorf("vmalloc area %#x+%#x page tables: %w", lo, size, err)
	}
	out.Tables = w.Tables
	sort.Slice(out.List, func(i, j int) bool {
		a, b := out.List[i], out.List[j]
		return a.Left < b.Left || a.Left == b.Left && a.Right < b.Right
	})
	return out, nil
}

// vmallocArea is the vmalloc area: vmalloc_base (randomised with
// CONFIG_RANDOMIZE_MEMORY) and its size for the paging depth.
func (s *Snapshot) vmallocArea() (uint64, uint64) {
	k := s.g.In.K
	size := uint64(vmallocSize4)
	if k.Levels == 5 {
		size = vmallocSize5
	}
	base := uint64(defaultVmallocVA)
	if v, err := k.Syms.Addr("vmalloc_base"); err == nil {
		if b, err := k.U64(v); err == nil && b >= 1<<63 && b+size > b {
			base = b
		}
	}
	return base, size
}

// VirtualStats is what a virtual pass found and did.
type VirtualStats struct {
	memscan.SeamResult
	Tables  int // page tables read to find the seams
	Matches int // string matches found across seams
	Deduped int // physical matches the virtual view replaced (the same first byte, longer)
}

// AddVirtual merges the matches found across seams (res, from a memscan.SeamScanner
// over seams.List) into ms, the physical pass's matches: each becomes a string match
// with Virtual set, Offset the physical address of its first byte and Processes (or
// Kernel) naming the address spaces that have the seam, each with the virtual address
// of the first byte there. A physical match of the same rule and string at the same
// first byte (the part of the string that lies before the seam) is replaced by the
// virtual one: one finding, naming both addresses. Rules found only across seams are
// added. At most memscan.MaxAddressesPerRule string matches are kept per rule; the
// others are counted in Cut.
func AddVirtual(ms []detectors.Match, seams *Seams, res memscan.SeamResult) ([]detectors.Match, VirtualStats) {
	st := VirtualStats{SeamResult: res, Tables: seams.Tables}
	idx := map[[2]string]int{}
	for i, m := range ms {
		idx[[2]string{m.Namespace, m.Rule}] = i
	}
	for _, sm := range res.Matches {
		k := [2]string{sm.Match.Namespace, sm.Match.Rule}
		i, ok := idx[k]
		if !ok {
			m := sm.Match
			m.Strings = nil
			ms = append(ms, m)
			i = len(ms) - 1
			idx[k] = i
		}
		m := &ms[i]
		for _, s := range sm.Match.Strings {
			st.Matches++
			s.Virtual = true
			into := sm.Seam.Left + memscan.PageSize - s.Offset // bytes before the seam
			s.ProcessCount = seams.Count[sm.Seam]
			for _, h := range seams.Holders[sm.Seam] {
				if h.Kernel != "" {
					if s.Kernel == nil {
						s.Kernel = &detectors.KernelMapping{Kind: h.Kernel, Module: h.Module, Address: h.VA - into}
					}
					s.ProcessCount--
					continue
				}
				s.Processes = append(s.Processes, detectors.ProcessMapping{PID: h.PID, Name: h.Comm, Address: h.VA - into})
			}
			sort.SliceStable(s.Processes, func(a, b int) bool { return s.Processes[a].PID < s.Processes[b].PID })
			s.ProcessCount = max(s.ProcessCount, len(s.Processes))
			if j := samePlace(m.Strings, s); j >= 0 {
				m.Strings[j] = s
				st.Deduped++
				continue
			}
			if len(m.Strings) >= memscan.MaxAddressesPerRule {
				m.Cut++
				continue
			}
			m.Strings = append(m.Strings, s)
		}
		sort.SliceStable(m.Strings, func(a, b int) bool { return m.Strings[a].Offset < m.Strings[b].Offset })
	}
	return ms, st
}

// samePlace finds a physical match of the same string starting at the same byte.
func samePlace(ss []detectors.StringMatch, v detectors.StringMatch) int {
	for j, s := range ss {
		if !s.Virtual && s.Offset == v.Offset && s.Name == v.Name {
			return j
		}
	}
	return -1
}

// ScanVirtual attributes ms (as Annotate does, in the same page-table walk that finds
// the snapshot's seams), scans the seams' windows with rules through sc (which
// remembers unchanged windows from pass to pass, and does not read those whose frames
// lie in blocks the pass found unchanged: see Since) and merges what crosses them into
// ms (AddVirtual).
func (s *Snapshot) ScanVirtual(ctx context.Context, src memscan.Source, sc *memscan.SeamScanner, rules memscan.RuleSet, ms []detectors.Match) ([]detectors.Match, VirtualStats, error) {
	fs := newFrameSet(matchAddrs(ms))
	seams, err := s.seams(fs)
	if err != nil {
		return ms, VirtualStats{}, err
	}
	annotate(ms, fs.finish(s))
	res, err := sc.Scan(ctx, src, seams.List, rules, s.g.spaces.cur)
	if err != nil {
		return ms, VirtualStats{SeamResult: res, Tables: seams.Tables}, err
	}
	s.nameVmallocOwners(seams, res)
	ms, st := AddVirtual(ms, seams, res)
	return ms, st, nil
}

// nameVmallocOwners names the module that allocated each vmalloc-area seam that has a
// match (vmallocOwners); a failed look-up leaves them unnamed.
func (s *Snapshot) nameVmallocOwners(seams *Seams, res memscan.SeamResult) {
	var vas []uint64
	for _, sm := range res.Matches {
		for _, h := range seams.Holders[sm.Seam] {
			if h.Kernel == KernelVmalloc {
				vas = append(vas, h.VA)
			}
		}
	}
	owners, _ := s.vmallocOwners(vas)
	for _, sm := range res.Matches {
		hs := seams.Holders[sm.Seam]
		for i := range hs {
			if hs[i].Kernel == KernelVmalloc && owners[hs[i].VA] != "" {
				hs[i].Module = owners[hs[i].VA]
			}
		}
	}
}
