package linux

import (
	"bytes"
	"fmt"
	"sort"
	"time"

	"github.com/domainm/domainm/memscan"
)

// Guest is a Linux guest whose layout (Find) and types (LoadBTF) were derived once.
// Its Snapshot lists what changes from pass to pass (processes, their page-table roots,
// modules) cheaply enough to be taken on every memory pass. A Guest belongs to one
// source; after a migration (a new source) derive it again with OpenGuest.
type Guest struct {
	In *Inspector
	// Took is how long deriving the layout and loading the types took.
	Took time.Duration
	// spaces remembers each address space's last walk (spaces.go). A Guest and its
	// snapshots are used by one goroutine at a time.
	spaces spaceCache
}

// OpenGuest derives the layout and types of the Linux guest in src.
func OpenGuest(src memscan.Source) (*Guest, error) {
	t0 := time.Now()
	k, err := Find(src)
	if err != nil {
		return nil, err
	}
	ty, err := k.LoadBTF()
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.Release, err)
	}
	in, err := NewInspector(k, ty)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.Release, err)
	}
	return &Guest{In: in, Took: time.Since(t0)}, nil
}

// Limits of one snapshot's page-table walks: a hostile guest cannot make them unbounded.
const (
	maxSnapshotTables = 1 << 20 // page tables read, over all processes
	maxModulePages    = 1 << 20 // module pages recorded
)

// Task is a process as a snapshot lists it: what attribution needs.
type Task struct {
	PID  int
	Comm string
	PGD  uint64 // physical address of its page-table root
}

// ModuleSpan is one memory region of a module (its core text and data; init memory is
// freed after loading).
type ModuleSpan struct {
	Module   string
	VA, Size uint64
}

// Snapshot is the guest's processes and modules at one instant, for attributing the
// matches of one pass. Reading them takes one walk of the task list and of the module
// list (kernel pointers translated through a small cache of the snapshot's own) and
// walks of the modules' page tables; processes' page tables are walked only when
// addresses are attributed (Attribute).
type Snapshot struct {
	g       *Guest
	Tasks   []Task // user processes (with page tables), by task-list order
	Modules []ModuleSpan
	// modPages maps a module's physical 4 KiB frames to its name and virtual page.
	modPages map[uint64]kernelPage
	// image is the kernel image's text, rodata, data and bss as physical ranges; its
	// init sections and the gaps between are freed after boot and reused.
	image [][2]uint64
	Took  time.Duration
}

type kernelPage struct {
	module string
	va     uint64
}

// Snapshot reads the current processes and modules.
func (g *Guest) Snapshot() (*Snapshot, error) {
	t0 := time.Now()
	in := g.In
	r := &tlbReader{as: in.K.as, tlb: map[uint64]uint64{}, direct: in.K.PageOffset}
	s := &Snapshot{g: g, modPages: map[uint64]kernelPage{}}
	var err error
	if s.Tasks, err = in.userTasks(r); err != nil {
		return nil, err
	}
	if s.Modules, err = in.moduleSpans(r); err != nil {
		return nil, err
	}
	w := newPTWalker(in.K.p, in.K.Levels, maxSnapshotTables)
	for _, m := range s.Modules {
		var werr error
		err := w.walk(in.K.PGD, m.VA, m.VA+m.Size, func(va, pa, size uint64) {
			for off := uint64(0); off < size && werr == nil; off += 4096 {
				if va+off < m.VA || va+off >= m.VA+m.Size {
					continue
				}
				if len(s.modPages) >= maxModulePages {
					werr = fmt.Errorf("more than %d module pages", maxModulePages)
				}
				s.modPages[pa+off] = kernelPage{module: m.Module, va: va + off}
			}
		})
		if err = firstErr(err, werr); err != nil {
			return nil, fmt.Errorf("module %s page tables: %w", m.Module, err)
		}
	}
	s.image = in.imageRanges()
	s.Took = time.Since(t0)
	return s, nil
}

// Since tells the snapshot which blocks the memory pass it follows found unchanged
// (memscan.PassResult.Unchanged): address spaces whose page tables lie in them are not
// walked again. Call it once per pass, before Attribute, Seams or ScanVirtual.
func (s *Snapshot) Since(unchanged *memscan.BlockSet) *Snapshot {
	s.g.spaces.rotate(unchanged)
	return s
}

// CacheStats says how many address-space walks were reused and how many done, since
// the Guest was made.
func (g *Guest) CacheStats() (reused, walked int) { return g.spaces.hits, g.spaces.miss }

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// tlbReader reads kernel virtual memory, caching translations by 4 KiB page: a task
// walk reads a dozen fields per task_struct, each of which Translate would walk from
// the root. It is meant for one snapshot (the guest changes its mappings over time).
type tlbReader struct {
	as  *AddressSpace
	tlb map[uint64]uint64 // virtual page -> physical page
	// direct is page_offset_base (0: unknown): an address in the direct map of all RAM
	// (where task_structs and mm_structs live) translates by subtraction.
	direct uint64
}

// directMapSpan is the size of the direct map's virtual range (64 TiB with 4-level
// paging; 5-level's is larger, and is then translated by walking).
const directMapSpan = 1 << 46

func (r *tlbReader) read(va uint64, b []byte) error {
	for done := 0; done < len(b); {
		v := va + uint64(done)
		page, ok := r.tlb[v>>12]
		if !ok && r.direct != 0 && v >= r.direct && v-r.direct < directMapSpan {
			page, ok = (v-r.direct)&^0xfff, true
		}
		if !ok {
			m, err := r.as.Translate(v &^ 0xfff)
			if err != nil {
				return err
			}
			page = m.PA
			if len(r.tlb) < 1<<16 {
				r.tlb[v>>12] = page
			}
		}
		n := min(len(b)-done, int(4096-v&0xfff))
		if err := r.as.p.read(page+v&0xfff, b[done:done+n]); err != nil {
			return fmt.Errorf("virtual %#x: %w", v, err)
		}
		done += n
	}
	return nil
}

// translate translates va as read does.
func (r *tlbReader) translate(va uint64) (uint64, error) {
	if r.direct != 0 && va >= r.direct && va-r.direct < directMapSpan {
		return va - r.direct, nil
	}
	m, err := r.as.Translate(va)
	return m.PA, err
}

func (r *tlbReader) u64(va uint64) (uint64, error) {
	var b [8]byte
	err := r.read(va, b[:])
	return le.Uint64(b[:]), err
}

func (r *tlbReader) u32(va uint64) (uint32, error) {
	var b [4]byte
	err := r.read(va, b[:])
	return le.Uint32(b[:]), err
}

// userTasks walks the task list like Processes but reads only pid, comm, flags and the
// page-table root, through r: the per-pass refresh of who can hold a page.
func (in *Inspector) userTasks(r *tlbReader) ([]Task, error) {
	o := in.o
	var out []Task
	head := in.taskV + o.taskTasks
	seen := map[uint64]bool{head: true}
	node, err := r.u64(head)
	if err != nil {
		return nil, fmt.Errorf("task list head at %#x: %w", head, err)
	}
	comm := make([]byte, o.commLen)
	for n := 0; node != head; n++ {
		if n >= maxTasks {
			return nil, fmt.Errorf("task list at %#x: more than %d entries", head, maxTasks)
		}
		if seen[node] {
			return nil, fmt.Errorf("task list at %#x: loop at entry %d (%#x seen before)", head, n, node)
		}
		seen[node] = true
		task := node - o.taskTasks
		t, err := in.userTask(r, task, comm)
		if err != nil {
			return nil, fmt.Errorf("task_struct at %#x: %w", task, err)
		}
		if t.PGD != 0 {
			out = append(out, t)
		}
		if node, err = r.u64(node); err != nil {
			return nil, fmt.Errorf("task list at %#x: entry %d: %w", head, n, err)
		}
	}
	return out, nil
}

func (in *Inspector) userTask(r *tlbReader, task uint64, comm []byte) (Task, error) {
	o := in.o
	var t Task
	flags, err := r.u32(task + o.taskFlags)
	if err != nil || flags&pfKthread != 0 {
		return t, err
	}
	pid, err := r.u32(task + o.taskPid)
	if err != nil {
		return t, fmt.Errorf("pid: %w", err)
	}
	if err := r.read(task+o.taskComm, comm); err != nil {
		return t, fmt.Errorf("comm: %w", err)
	}
	c, _, _ := bytes.Cut(comm, []byte{0})
	mm, err := r.u64(task + o.taskMM)
	if err != nil || mm == 0 {
		return t, err
	}
	pgd, err := r.u64(mm + o.mmPGD)
	if err != nil {
		return t, fmt.Errorf("mm %#x pgd: %w", mm, err)
	}
	pa, err := r.translate(pgd)
	if err != nil {
		return t, fmt.Errorf("mm %#x pgd %#x: %w", mm, pgd, err)
	}
	return Task{PID: int(int32(pid)), Comm: string(c), PGD: pa}, nil
}

// moduleSpans walks the module list and returns each module's memory regions:
// core_layout (and init_layout, data_layout while they exist) up to Linux 6.3, mem[]
// from 6.4. A region larger than the module area (1.5 GiB) is hostile and left out.
func (in *Inspector) moduleSpans(r *tlbReader) ([]ModuleSpan, error) {
	o := in.o
	var parts []uint64
	if o.modMemN > 0 {
		for i := range o.modMemN {
			parts = append(parts, o.modMem+i*o.modMemSize)
		}
	} else {
		parts = o.modLayouts
	}
	name := make([]byte, o.modNameLen)
	var out []ModuleSpan
	err := in.walkList("module", in.modsV, maxModules, func(node uint64) error {
		mod := node - o.modList
		if err := r.read(mod+o.modName, name); err != nil {
			return fmt.Errorf("module at %#x: name: %w", mod, err)
		}
		n, _, _ := bytes.Cut(name, []byte{0})
		for _, l := range parts {
			base, err := r.u64(mod + l + o.layoutBase)
			if err != nil {
				return fmt.Errorf("module %s at %#x: base: %w", n, mod, err)
			}
			size, err := r.u32(mod + l + o.layoutSz)
			if err != nil {
				return fmt.Errorf("module %s at %#x: size: %w", n, mod, err)
			}
			if base != 0 && size != 0 && size <= 3<<29 && base+uint64(size) > base {
				out = append(out, ModuleSpan{Module: string(n), VA: base, Size: uint64(size)})
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].VA < out[j].VA })
	return out, err
}

// imageRanges returns the kernel image's text, rodata, data and bss as physical ranges.
func (in *Inspector) imageRanges() [][2]uint64 {
	var out [][2]uint64
	for _, r := range [][2]string{{"_text", "_etext"}, {"__start_rodata", "__end_rodata"}, {"_sdata", "_edata"}, {"__bss_start", "__bss_stop"}} {
		s, err1 := in.K.Syms.Addr(r[0])
		e, err2 := in.K.Syms.Addr(r[1])
		if err1 != nil || err2 != nil || s < in.K.TextVA || e < s || e-in.K.TextVA > kernelImageSpan {
			continue
		}
		out = append(out, [2]uint64{in.K.TextPA + (s - in.K.TextVA), in.K.TextPA + (e - in.K.TextVA)})
	}
	return out
}
