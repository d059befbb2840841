package linux

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func (g *guest) inspector(t *testing.T) *Inspector {
	t.Helper()
	k := g.kernel(t)
	t0 := time.Now()
	ty, err := k.LoadBTF()
	if err != nil {
		t.Fatalf("LoadBTF: %v", err)
	}
	in, err := NewInspector(k, ty)
	if err != nil {
		t.Fatalf("NewInspector: %v", err)
	}
	t.Logf("BTF (%d KiB) loaded and parsed in %v", ty.Size>>10, time.Since(t0))
	return in
}

// TestBTFOffsets: the kernel's own BTF, found through kallsyms in guest memory, gives
// the members the walks read.
func TestBTFOffsets(t *testing.T) {
	g := bootGuest(t)
	in := g.inspector(t)
	for _, f := range [][2]string{{"task_struct", "tasks"}, {"task_struct", "pid"}, {"task_struct", "tgid"}, {"task_struct", "comm"},
		{"task_struct", "mm"}, {"mm_struct", "pgd"}, {"module", "list"}, {"module", "name"}, {"module", "core_layout.base"}} {
		fl, err := in.T.Field(f[0], f[1])
		if err != nil {
			t.Error(err)
			continue
		}
		t.Logf("%s.%s at %d (%d bytes)", f[0], f[1], fl.Offset, fl.Size)
	}
	// init_task's comm through those offsets is the idle task's.
	comm, err := in.cstring(in.taskV+in.o.taskComm, in.o.commLen)
	if err != nil || comm != "swapper/0" {
		t.Errorf("init_task.comm = %q, %v", comm, err)
	}
}

// TestProcessesAndModules: the task list and the module list equal the guest's own
// /proc/PID/stat, /proc/PID/status (Uid) and /proc/modules.
func TestProcessesAndModules(t *testing.T) {
	g := bootGuest(t)
	in := g.inspector(t)
	t0 := time.Now()
	procs, err := in.Processes()
	tp := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	mods, err := in.Modules()
	tm := time.Since(t1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d processes in %v, %d modules in %v", len(procs), tp, len(mods), tm)
	if procs[0].PID != 0 || procs[0].Comm != "swapper/0" {
		t.Errorf("first task %+v, want swapper/0", procs[0])
	}
	got := map[int]Process{}
	for _, p := range procs[1:] {
		if _, dup := got[p.PID]; dup {
			t.Errorf("pid %d twice", p.PID)
		}
		got[p.PID] = p
	}
	for pid, w := range g.procs {
		p, ok := got[pid]
		if !ok {
			t.Errorf("guest's pid %d (%s) not found", pid, w.comm)
			continue
		}
		// /proc shows a kernel thread's full name (struct kthread's full_name, and a
		// workqueue worker's "-<workqueue>"); task_struct.comm holds its first 15 bytes.
		commOK := p.Comm == w.comm || p.Kernel && len(p.Comm) > 0 && strings.HasPrefix(w.comm, p.Comm)
		if !commOK || p.PPID != w.ppid || int(p.UID) != w.uid || p.TGID != pid || uint64(p.Start.Nanoseconds())/1e7 != w.startTicks {
			t.Errorf("pid %d: %s ppid %d uid %d tgid %d start %v; guest: %s ppid %d uid %d start %d ticks",
				pid, p.Comm, p.PPID, p.UID, p.TGID, p.Start, w.comm, w.ppid, w.uid, w.startTicks)
		}
		// The shell's read drops the NULs between arguments (or stops at the first).
		if c := strings.Join(p.Cmdline, ""); c != w.cmdline && (len(p.Cmdline) == 0 || p.Cmdline[0] != w.cmdline) || p.CmdlineErr != "" {
			t.Errorf("pid %d %s: command line %q (%s); guest's /proc/%d/cmdline reads %q", pid, p.Comm, p.Cmdline, p.CmdlineErr, pid, w.cmdline)
		} else if !p.Kernel {
			t.Logf("pid %d: %q", pid, p.Cmdline)
		}
		if (p.PGD == 0) != p.Kernel {
			t.Errorf("pid %d %s: kernel thread %v but page-table root %#x", pid, p.Comm, p.Kernel, p.PGD)
		}
	}
	for pid, p := range got {
		if _, ok := g.procs[pid]; !ok {
			t.Errorf("pid %d (%s) not in the guest's /proc", pid, p.Comm)
		}
	}
	// The user processes' page tables map the kernel like init_top_pgt does.
	bannerVA := g.sym(t, "linux_banner")
	for _, p := range procs {
		if p.PGD == 0 {
			continue
		}
		m, err := in.K.UserSpace(p.PGD).Translate(bannerVA)
		if err != nil || m.PA != in.K.BannerPA {
			t.Errorf("pid %d %s: its page tables at %#x map linux_banner to %+v, %v", p.PID, p.Comm, p.PGD, m, err)
		}
	}
	var gm, wm []string
	for _, m := range mods {
		gm = append(gm, fmt.Sprintf("%s %d %#x", m.Name, m.Size, m.Base))
	}
	for _, m := range g.modules {
		wm = append(wm, fmt.Sprintf("%s %d %#x", m.name, m.size, m.base))
	}
	if !slices.Equal(gm, wm) {
		t.Errorf("modules:\n%v\nguest's /proc/modules:\n%v", gm, wm)
	}
	t.Logf("modules: %v", gm)
}
