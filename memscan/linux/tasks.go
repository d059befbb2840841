package linux

import (
	"bytes"
	"fmt"
	"time"
)

// Walk limits: a guest with more tasks or modules than this is refused, not walked forever.
const (
	maxTasks   = 1 << 20
	maxModules = 1 << 14
)

// offsets are the struct member offsets the walks need, from the kernel's BTF.
type offsets struct {
	taskTasks, taskPid, taskTgid, taskComm, taskMM, taskParent, taskCred, taskStart, taskFlags uint64
	commLen                                                                                    uint64
	credUID, mmPGD, mmArgStart, mmArgEnd                                                       uint64
	modList, modName, modNameLen, modState                                                     uint64
	// Module memory: Linux up to 6.3 has init_layout/core_layout (base, size) and maybe
	// data_layout; 6.4+ has mem[MOD_MEM_NUM_TYPES] of struct module_memory.
	modLayouts           []uint64 // offsets of struct module_layout members to sum
	modBase              uint64   // offset of the base pointer of the text layout/memory
	layoutBase, layoutSz uint64   // within module_layout / module_memory
	modMem, modMemN      uint64   // 6.4+: offset of mem[], number of entries
	modMemSize           uint64   // sizeof(struct module_memory)
}

// Offsets resolves the members the process and module walks read; an error names the
// member the kernel's BTF lacks.
func (t *Types) offsets() (*offsets, error) {
	o := &offsets{}
	var errs []error
	get := func(s, path string) uint64 {
		f, err := t.Field(s, path)
		if err != nil {
			errs = append(errs, err)
		}
		return f.Offset
	}
	o.taskTasks = get("task_struct", "tasks")
	o.taskPid = get("task_struct", "pid")
	o.taskTgid = get("task_struct", "tgid")
	o.taskComm = get("task_struct", "comm")
	if f, err := t.Field("task_struct", "comm"); err == nil {
		o.commLen = f.Size
	}
	o.taskMM = get("task_struct", "mm")
	o.taskParent = get("task_struct", "real_parent")
	o.taskCred = get("task_struct", "cred")
	// start_boottime (Linux >= 5.5) is what /proc/PID/stat reports, so what ps shows;
	// start_time (monotonic) leaves out time the guest was suspended
	if f, err := t.Field("task_struct", "start_boottime"); err == nil {
		o.taskStart = f.Offset
	} else {
		o.taskStart = get("task_struct", "start_time")
	}
	o.taskFlags = get("task_struct", "flags")
	o.credUID = get("cred", "uid")
	o.mmPGD = get("mm_struct", "pgd")
	o.mmArgStart = get("mm_struct", "arg_start")
	o.mmArgEnd = get("mm_struct", "arg_end")
	o.modList = get("module", "list")
	o.modName = get("module", "name")
	if f, err := t.Field("module", "name"); err == nil {
		o.modNameLen = f.Size
	}
	o.modState = get("module", "state")
	if len(errs) > 0 {
		return nil, fmt.Errorf("kernel BTF: %v", errs)
	}
	if core, err := t.Field("module", "core_layout"); err == nil {
		o.modBase = core.Offset
		o.modLayouts = []uint64{core.Offset}
		for _, l := range []string{"init_layout", "data_layout"} {
			if f, err := t.Field("module", l); err == nil {
				o.modLayouts = append(o.modLayouts, f.Offset)
			}
		}
		o.layoutBase = get("module_layout", "base")
		o.layoutSz = get("module_layout", "size")
	} else if mem, err := t.Field("module", "mem"); err == nil {
		o.modMem, o.modBase = mem.Offset, mem.Offset // mem[MOD_TEXT], MOD_TEXT = 0
		o.modMemSize, _ = t.Sizeof("module_memory")
		if o.modMemSize == 0 || mem.Size%o.modMemSize != 0 {
			return nil, fmt.Errorf("kernel BTF: module.mem of %d bytes is not an array of module_memory", mem.Size)
		}
		o.modMemN = mem.Size / o.modMemSize
		o.layoutBase = get("module_memory", "base")
		o.layoutSz = get("module_memory", "size")
	} else {
		return nil, fmt.Errorf("kernel BTF: module has neither core_layout nor mem")
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("kernel BTF: %v", errs)
	}
	return o, nil
}

// Process is one task on the kernel's task list (a thread-group leader).
type Process struct {
	PID, TGID, PPID int
	UID             uint32
	Comm            string
	Kernel          bool          // a kernel thread (PF_KTHREAD)
	Start           time.Duration // since boot, as ps shows it (start_boottime; start_time before Linux 5.5)
	TaskVA          uint64        // the task_struct
	PGD             uint64        // physical address of its page-table root; 0 for kernel threads
	// Cmdline is the argument vector from the process's own pages (mm->arg_start ..
	// arg_end through its page tables), at most maxCmdline bytes; CmdlineErr says why
	// it could not be read (e.g. a page not present), without failing the listing.
	Cmdline    []string
	CmdlineErr string
}

// maxCmdline bounds the command line read, as /proc/PID/cmdline reads a page at a time.
const maxCmdline = 4096

// Inspector reads processes and modules of a guest whose layout and types are known.
type Inspector struct {
	K     *Kernel
	T     *Types
	o     *offsets
	taskV uint64 // init_task
	modsV uint64 // the modules list head
}

// NewInspector checks that the kernel's BTF has what the walks read.
func NewInspector(k *Kernel, t *Types) (*Inspector, error) {
	o, err := t.offsets()
	if err != nil {
		return nil, err
	}
	in := &Inspector{K: k, T: t, o: o}
	if in.taskV, err = k.Syms.Addr("init_task"); err != nil {
		return nil, err
	}
	if in.modsV, err = k.Syms.Addr("modules"); err != nil {
		return nil, err
	}
	return in, nil
}

func (in *Inspector) u64(va uint64) (uint64, error) { return in.K.U64(va) }

func (in *Inspector) u32(va uint64) (uint32, error) {
	var b [4]byte
	if err := in.K.Read(va, b[:]); err != nil {
		return 0, err
	}
	return le.Uint32(b[:]), nil
}

func (in *Inspector) cstring(va, n uint64) (string, error) {
	b := make([]byte, n)
	if err := in.K.Read(va, b); err != nil {
		return "", err
	}
	b, _, _ = bytes.Cut(b, []byte{0})
	return string(b), nil
}

// walkList follows a kernel list_head from head, calling fn with each entry's node
// address (not the head). It stops after limit entries, on a node seen before (a loop
// that does not return to head) and on unreadable nodes.
func (in *Inspector) walkList(what string, head uint64, limit int, fn func(node uint64) error) error {
	seen := map[uint64]bool{head: true}
	node, err := in.u64(head)
	if err != nil {
		return fmt.Errorf("%s list head at %#x: %w", what, head, err)
	}
	for n := 0; node != head; n++ {
		if n >= limit {
			return fmt.Errorf("%s list at %#x: more than %d entries", what, head, limit)
		}
		if seen[node] {
			return fmt.Errorf("%s list at %#x: loop at entry %d (%#x seen before)", what, head, n, node)
		}
		seen[node] = true
		if err := fn(node); err != nil {
			return err
		}
		next, err := in.u64(node)
		if err != nil {
			return fmt.Errorf("%s list at %#x: entry %d at %#x: %w", what, head, n, node, err)
		}
		node = next
	}
	return nil
}

// Processes walks init_task.tasks and returns every task on it, init_task (pid 0) first.
func (in *Inspector) Processes() ([]Process, error) {
	o := in.o
	p0, err := in.process(in.taskV)
	if err != nil {
		return nil, err
	}
	out := []Process{p0}
	err = in.walkList("task", in.taskV+o.taskTasks, maxTasks, func(node uint64) error {
		p, err := in.process(node - o.taskTasks)
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// PF_KTHREAD (include/linux/sched.h), stable since 2.6.
const pfKthread = 0x00200000

func (in *Inspector) process(task uint64) (Process, error) {
	o := in.o
	p := Process{TaskVA: task}
	fail := func(what string, err error) (Process, error) {
		return Process{}, fmt.Errorf("task_struct at %#x: %s: %w", task, what, err)
	}
	pid, err := in.u32(task + o.taskPid)
	if err != nil {
		return fail("pid", err)
	}
	tgid, err := in.u32(task + o.taskTgid)
	if err != nil {
		return fail("tgid", err)
	}
	p.PID, p.TGID = int(int32(pid)), int(int32(tgid))
	if p.Comm, err = in.cstring(task+o.taskComm, o.commLen); err != nil {
		return fail("comm", err)
	}
	flags, err := in.u32(task + o.taskFlags)
	if err != nil {
		return fail("flags", err)
	}
	p.Kernel = flags&pfKthread != 0
	st, err := in.u64(task + o.taskStart)
	if err != nil {
		return fail("start time", err)
	}
	p.Start = time.Duration(st)
	if parent, err := in.u64(task + o.taskParent); err != nil {
		return fail("real_parent", err)
	} else if parent != task {
		pp, err := in.u32(parent + o.taskTgid)
		if err != nil {
			return fail(fmt.Sprintf("real_parent %#x tgid", parent), err)
		}
		p.PPID = int(int32(pp))
	}
	if task == in.taskV {
		p.PPID = 0
	}
	cred, err := in.u64(task + o.taskCred)
	if err != nil {
		return fail("cred", err)
	}
	if p.UID, err = in.u32(cred + o.credUID); err != nil {
		return fail(fmt.Sprintf("cred %#x uid", cred), err)
	}
	mm, err := in.u64(task + o.taskMM)
	if err != nil {
		return fail("mm", err)
	}
	if mm != 0 {
		pgd, err := in.u64(mm + o.mmPGD)
		if err != nil {
			return fail(fmt.Sprintf("mm %#x pgd", mm), err)
		}
		m, err := in.K.Translate(pgd)
		if err != nil {
			return fail(fmt.Sprintf("mm %#x pgd %#x", mm, pgd), err)
		}
		p.PGD = m.PA
		p.Cmdline, err = in.cmdline(p.PGD, mm)
		if err != nil {
			p.CmdlineErr = err.Error()
		}
	}
	return p, nil
}

// cmdline reads the argument area of the process whose page tables are at pgd.
func (in *Inspector) cmdline(pgd, mm uint64) ([]string, error) {
	start, err := in.u64(mm + in.o.mmArgStart)
	if err != nil {
		return nil, fmt.Errorf("mm %#x arg_start: %w", mm, err)
	}
	end, err := in.u64(mm + in.o.mmArgEnd)
	if err != nil {
		return nil, fmt.Errorf("mm %#x arg_end: %w", mm, err)
	}
	if end <= start {
		return nil, nil
	}
	b := make([]byte, min(end-start, maxCmdline))
	if err := in.K.UserSpace(pgd).Read(start, b); err != nil {
		return nil, fmt.Errorf("arguments at %#x: %w", start, err)
	}
	b = bytes.TrimRight(b, "\x00")
	var args []string
	for _, a := range bytes.Split(b, []byte{0}) {
		args = append(args, string(a))
	}
	return args, nil
}

// Module is a loaded kernel module from the modules list.
type Module struct {
	Name     string
	Base     uint64 // start of its core text (as /proc/modules shows)
	Size     uint64 // all its memory (as /proc/modules shows)
	State    int    // 0 live, 1 coming, 2 going, 3 unformed
	ModuleVA uint64 // the struct module
	// Ranges are its memory areas [start, end): text and data (core), init (until
	// freed after loading), and on 6.4+ each module_memory.
	Ranges [][2]uint64
}

// Modules walks the modules list in its order (newest first, as /proc/modules).
func (in *Inspector) Modules() ([]Module, error) {
	var out []Module
	err := in.walkList("module", in.modsV, maxModules, func(node uint64) error {
		m, err := in.module(node - in.o.modList)
		if err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// module reads the struct module at mod.
func (in *Inspector) module(mod uint64) (Module, error) {
	o := in.o
	m := Module{ModuleVA: mod}
	fail := func(what string, err error) (Module, error) {
		return Module{}, fmt.Errorf("module at %#x: %s: %w", mod, what, err)
	}
	var err error
	if m.Name, err = in.cstring(mod+o.modName, o.modNameLen); err != nil {
		return fail("name", err)
	}
	st, err := in.u32(mod + o.modState)
	if err != nil {
		return fail("state", err)
	}
	m.State = int(st)
	if m.Base, err = in.u64(mod + o.modBase + o.layoutBase); err != nil {
		return fail("base", err)
	}
	var parts []uint64
	if o.modMemN > 0 {
		for i := range o.modMemN {
			parts = append(parts, o.modMem+i*o.modMemSize)
		}
	} else {
		parts = o.modLayouts
	}
	for _, l := range parts {
		sz, err := in.u32(mod + l + o.layoutSz)
		if err != nil {
			return fail("size", err)
		}
		base, err := in.u64(mod + l + o.layoutBase)
		if err != nil {
			return fail("base", err)
		}
		m.Size += uint64(sz)
		if sz > 0 && base != 0 {
			m.Ranges = append(m.Ranges, [2]uint64{base, base + uint64(sz)})
		}
	}
	return m, nil
}

// Owns says whether va lies in the module's memory (one of its layouts).
func (m Module) Owns(va uint64) bool {
	for _, r := range m.Ranges {
		if va >= r[0] && va < r[1] {
			return true
		}
	}
	return false
}
