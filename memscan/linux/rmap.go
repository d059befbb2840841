package linux

import (
	"fmt"
	"sort"
)

// UserMapping is one process's mapping of a guest-physical address.
type UserMapping struct {
	PID  int
	Comm string
	VA   uint64 // virtual address in the process (of the byte attributed)
}

// Where the kernel holds an address that no process maps, or maps besides them
// (KernelMapping.Kind).
const (
	KernelImage     = "image"      // the kernel image's text, rodata, data or bss
	KernelModule    = "module"     // a loaded module's memory (KernelMapping.Module)
	KernelDirectMap = "direct-map" // only the kernel's map of all RAM (page_offset_base): slab, page cache, free pages...
)

// KernelMapping says where the kernel maps an address.
type KernelMapping struct {
	Kind   string
	Module string // for KernelModule
	VA     uint64 // kernel virtual address of the byte; 0 if unknown
}

// Attribution says who holds a guest-physical address: the processes that map its
// page (sorted by pid), and the kernel's own mapping when it is the kernel image or a
// module, or, when no process maps it, the direct map.
type Attribution struct {
	Processes []UserMapping
	Kernel    *KernelMapping
}

// AttributeStats is what an Attribute call read.
type AttributeStats struct {
	Processes int // page tables (processes) walked
	Tables    int // page tables read
	Skipped   int // table pointers outside RAM, not followed
}

// frameFilter is a cheap first test of whether a frame is one of the wanted ones, so
// that the page walks, which see every present leaf entry, do a map lookup only rarely.
type frameFilter [1024]uint64 // 64 Ki bits, indexed by the frame number's low bits

func (f *frameFilter) add(frame uint64) { n := frame >> 12 & 0xffff; f[n>>6] |= 1 << (n & 63) }
func (f *frameFilter) has(frame uint64) bool {
	n := frame >> 12 & 0xffff
	return f[n>>6]&(1<<(n&63)) != 0
}

// Attribute attributes guest-physical addresses: it walks the user half of every
// process's page tables once, looking for the frames that hold pas, then places what
// no process maps in a module, the kernel image or the direct map. Large pages count
// for every 4 KiB frame they cover. A process whose tables cannot be read is skipped
// (counted in stats), not an error: the walk goes on for the others.
func (s *Snapshot) Attribute(pas []uint64) (map[uint64]Attribution, AttributeStats, error) {
	out := make(map[uint64]Attribution, len(pas))
	var st AttributeStats
	if len(pas) == 0 {
		return out, st, nil
	}
	want := map[uint64][]uint64{} // frame -> addresses in it
	var filter frameFilter
	var frames []uint64
	for _, pa := range pas {
		f := pa &^ 0xfff
		if _, ok := want[f]; !ok {
			frames = append(frames, f)
			filter.add(f)
		}
		want[f] = append(want[f], pa)
	}
	sort.Slice(frames, func(i, j int) bool { return frames[i] < frames[j] })
	k := s.g.In.K
	w := newPTWalker(k.p, k.Levels, maxSnapshotTables)
	hit := func(t Task, va, frame uint64) {
		for _, pa := range want[frame] {
			a := out[pa]
			a.Processes = append(a.Processes, UserMapping{PID: t.PID, Comm: t.Comm, VA: va | pa&0xfff})
			out[pa] = a
		}
	}
	for _, t := range s.Tasks {
		st.Processes++
		err := w.walk(t.PGD, 0, userTop(k.Levels), func(va, pa, size uint64) {
			if size == 4096 {
				if filter.has(pa) && want[pa] != nil {
					hit(t, va, pa)
				}
				return
			}
			// A large page: the wanted frames inside it.
			for i := sort.Search(len(frames), func(i int) bool { return frames[i] >= pa }); i < len(frames) && frames[i] < pa+size; i++ {
				hit(t, va+frames[i]-pa, frames[i])
			}
		})
		if err != nil {
			return nil, st, fmt.Errorf("pid %d (%s) page tables at %#x: %w", t.PID, t.Comm, t.PGD, err)
		}
	}
	st.Tables, st.Skipped = w.Tables, w.Skipped
	for _, pa := range pas {
		a := out[pa]
		sort.SliceStable(a.Processes, func(i, j int) bool { return a.Processes[i].PID < a.Processes[j].PID })
		a.Kernel = s.kernelPlace(pa, len(a.Processes) == 0)
		out[pa] = a
	}
	return out, st, nil
}

// kernelPlace says where the kernel maps pa: a module or the kernel image, or (when
// direct is set: no process maps it) the direct map.
func (s *Snapshot) kernelPlace(pa uint64, direct bool) *KernelMapping {
	k := s.g.In.K
	if p, ok := s.modPages[pa&^0xfff]; ok {
		return &KernelMapping{Kind: KernelModule, Module: p.module, VA: p.va | pa&0xfff}
	}
	for _, r := range s.image {
		if pa >= r[0] && pa < r[1] {
			return &KernelMapping{Kind: KernelImage, VA: k.TextVA + (pa - k.TextPA)}
		}
	}
	if !direct {
		return nil
	}
	km := &KernelMapping{Kind: KernelDirectMap}
	if k.PageOffset != 0 {
		km.VA = k.PageOffset + pa
	}
	return km
}
