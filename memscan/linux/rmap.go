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

// frameSet is the frames a walk looks for, and what it found: the processes mapping
// each wanted address.
type frameSet struct {
	want   map[uint64][]uint64 // frame -> wanted addresses in it
	filter frameFilter
	frames []uint64 // sorted
	out    map[uint64]Attribution
}

func newFrameSet(pas []uint64) *frameSet {
	f := &frameSet{want: map[uint64][]uint64{}, out: make(map[uint64]Attribution, len(pas))}
	for _, pa := range pas {
		fr := pa &^ 0xfff
		if _, ok := f.want[fr]; !ok {
			f.frames = append(f.frames, fr)
			f.filter.add(fr)
		}
		f.want[fr] = append(f.want[fr], pa)
	}
	sort.Slice(f.frames, func(i, j int) bool { return f.frames[i] < f.frames[j] })
	return f
}

// leaf records t's mapping of the wanted frames in one leaf entry.
func (f *frameSet) leaf(t Task, va, pa, size uint64) {
	if size == 4096 {
		if f.filter.has(pa) && f.want[pa] != nil {
			f.hit(t, va, pa)
		}
		return
	}
	// A large page: the wanted frames inside it.
	for i := sort.Search(len(f.frames), func(i int) bool { return f.frames[i] >= pa }); i < len(f.frames) && f.frames[i] < pa+size; i++ {
		f.hit(t, va+f.frames[i]-pa, f.frames[i])
	}
}

func (f *frameSet) hit(t Task, va, frame uint64) {
	for _, pa := range f.want[frame] {
		a := f.out[pa]
		a.Processes = append(a.Processes, UserMapping{PID: t.PID, Comm: t.Comm, VA: va | pa&0xfff})
		f.out[pa] = a
	}
}

// finish sorts each address's processes by pid and places it in the kernel.
func (f *frameSet) finish(s *Snapshot) map[uint64]Attribution {
	for _, addrs := range f.want {
		for _, pa := range addrs {
			a := f.out[pa]
			sort.SliceStable(a.Processes, func(i, j int) bool { return a.Processes[i].PID < a.Processes[j].PID })
			a.Kernel = s.kernelPlace(pa, len(a.Processes) == 0)
			f.out[pa] = a
		}
	}
	return f.out
}

// Attribute attributes guest-physical addresses: it walks the user half of every
// process's page tables once, looking for the frames that hold pas, then places what
// no process maps in a module, the kernel image or the direct map. Large pages count
// for every 4 KiB frame they cover. Tables outside RAM are skipped (counted in stats),
// not followed.
func (s *Snapshot) Attribute(pas []uint64) (map[uint64]Attribution, AttributeStats, error) {
	var st AttributeStats
	if len(pas) == 0 {
		return map[uint64]Attribution{}, st, nil
	}
	fs := newFrameSet(pas)
	k := s.g.In.K
	w := newPTWalker(k.p, k.Levels, maxSnapshotTables)
	for _, t := range s.Tasks {
		st.Processes++
		runs, err := s.g.spaces.get(w, t.PGD, 0, userTop(k.Levels))
		if err != nil {
			return nil, st, fmt.Errorf("pid %d (%s) page tables at %#x: %w", t.PID, t.Comm, t.PGD, err)
		}
		for _, r := range runs {
			fs.leaf(t, r.va, r.pa, r.size)
		}
	}
	st.Tables, st.Skipped = w.Tables, w.Skipped
	return fs.finish(s), st, nil
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
