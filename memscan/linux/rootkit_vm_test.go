package linux

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/linux/linuxtest"
)

// integrity derives the layout of the stopped guest in src and runs the checks.
func integrity(t *testing.T, src memscan.Source) ([]Process, []CheckResult) {
	_, procs, _, res := integrityIn(t, src)
	return procs, res
}

// integrityIn is integrity that also returns the inspector and the modules.
func integrityIn(t *testing.T, src memscan.Source) (*Inspector, []Process, []Module, []CheckResult) {
	t.Helper()
	k, err := Find(src)
	if err != nil {
		t.Fatal(err)
	}
	ty, err := k.LoadBTF()
	if err != nil {
		t.Fatal(err)
	}
	in, err := NewInspector(k, ty)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	procs, err := in.Processes()
	if err != nil {
		t.Fatal(err)
	}
	mods, err := in.Modules()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("layout %v; %d processes and %d modules in %v", k.Took, len(procs), len(mods), time.Since(t0))
	res := in.Integrity(procs, mods)
	for _, r := range res {
		t.Logf("check %s: %d checked in %v (%s); %d findings; error %q", r.Check, r.Checked, r.Took, r.Coverage, len(r.Findings), r.Err)
		if r.Err != "" {
			t.Errorf("check %s: %s", r.Check, r.Err)
		}
		for _, f := range r.Findings {
			t.Logf("  %s: %s %v", f.Key, f.Summary, f.Evidence)
		}
	}
	return in, procs, mods, res
}

// pteAddress returns the guest-physical address of the level-1 entry that maps va.
func pteAddress(t *testing.T, k *Kernel, va uint64) uint64 {
	t.Helper()
	table := k.PGD &^ 0xfff
	for level := k.Levels; level >= 1; level-- {
		ea := table + (va>>(12+9*(level-1))&0x1ff)*8
		e, err := k.p.u64(ea)
		if err != nil || e&ptePresent == 0 || level > 1 && e&ptePS != 0 {
			t.Fatalf("%#x: level-%d entry %#x at %#x, %v", va, level, e, ea, err)
		}
		if level == 1 {
			return ea
		}
		table = e & pteAddrMask
	}
	return 0
}

// TestRootkit: on the clean guest no check reports anything; after dmkit loads, each of
// its techniques is reported: its hook in sys_call_table and in the IDT (both naming
// dmkit, hidden, and its function), dmkit itself off the module list, the sleep it
// hid from the task list (in the pid hash); once dmkit undoes itself, nothing again.
func TestRootkit(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a TCG guest (-short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	t0 := time.Now()
	g, err := linuxtest.Boot(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer g.VM.Close()
	t.Logf("rootkit guest booted in %v (dmkit built)", time.Since(t0))
	src, err := memscan.Open("file:"+g.VM.RAMFile, memscan.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	if err := g.VM.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	procs, res := integrity(t, src)
	for _, r := range res {
		if len(r.Findings) > 0 {
			t.Errorf("clean guest: check %s reports %d findings", r.Check, len(r.Findings))
		}
	}
	found := false
	for _, p := range procs {
		found = found || p.PID == g.HiddenPID
	}
	if !found {
		t.Fatalf("clean guest: pid %d to be hidden not on the task list", g.HiddenPID)
	}

	if err := g.VM.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Infect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.VM.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	in, procs, mods, res := integrityIn(t, src)
	for _, p := range procs {
		if p.PID == g.HiddenPID {
			t.Errorf("pid %d still on the task list after dmkit hid it", p.PID)
		}
	}
	by := map[string][]Finding{}
	for _, r := range res {
		by[r.Check] = r.Findings
	}
	want := func(check string, ok func(f Finding) bool) {
		t.Helper()
		for _, f := range by[check] {
			if ok(f) {
				return
			}
		}
		t.Errorf("check %s: no expected finding among %+v", check, by[check])
	}
	hook := func(f Finding) bool {
		return f.Evidence["module"] == "dmkit" && f.Evidence["module_hidden"] == "true"
	}
	want(CheckSyscalls, func(f Finding) bool {
		return hook(f) && f.Evidence["table"] == "sys_call_table" && f.Evidence["nr"] == "62" && f.Evidence["symbol"] == "dmkit_kill"
	})
	want(CheckIDT, func(f Finding) bool {
		return hook(f) && f.Evidence["vector"] == "15" && strings.HasPrefix(f.Evidence["symbol"], "dmkit_idt_handler")
	})
	want(CheckHiddenModule, func(f Finding) bool { return f.Evidence["module"] == "dmkit" })
	want(CheckHiddenTask, func(f Finding) bool {
		return f.Evidence["pid"] == itoa(g.HiddenPID) && f.Evidence["comm"] == "sleep" && strings.Contains(f.Evidence["seen"], "pid hash")
	})
	for c, fs := range by {
		if len(fs) != 1 {
			t.Errorf("check %s: %d findings, want 1", c, len(fs))
		}
	}

	// The CPUs load the IDT through a read-only alias of idt_table: pointed (in the
	// stopped guest's page tables) at another page, the IDT check says so.
	pte := pteAddress(t, in.K, cpuEntryAreaIDT)
	old, err := in.K.p.u64(pte)
	if err != nil {
		t.Fatal(err)
	}
	tablePA, _, _, err := in.IDTAlias()
	if err != nil {
		t.Fatal(err)
	}
	put := func(v uint64) {
		t.Helper()
		b := make([]byte, 8)
		le.PutUint64(b, v)
		if err := g.VM.WriteRAM(int64(pte), b); err != nil {
			t.Fatal(err)
		}
	}
	put(old&^pteAddrMask | (tablePA+0x1000)&pteAddrMask)
	var alias []Finding
	for _, r := range in.Integrity(procs, mods) {
		for _, f := range r.Findings {
			if strings.HasPrefix(f.Key, "IDT alias -> ") {
				alias = append(alias, f)
			}
		}
	}
	put(old)
	if len(alias) != 1 || alias[0].Evidence["alias_physical"] != hex(tablePA+0x1000) {
		t.Errorf("IDT alias remapped to %#x: findings %+v", tablePA+0x1000, alias)
	} else {
		t.Log(alias[0].Summary)
	}

	// dmkit undoes itself: every check is clean again, and the task is back.
	if err := g.VM.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Undo(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.VM.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	procs, res = integrity(t, src)
	for _, r := range res {
		if len(r.Findings) > 0 {
			t.Errorf("after dmkit undid itself: check %s reports %d findings", r.Check, len(r.Findings))
		}
	}
	if !slices.ContainsFunc(procs, func(p Process) bool { return p.PID == g.HiddenPID }) {
		t.Errorf("pid %d not back on the task list", g.HiddenPID)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestIntegrityClean: on the shared clean guest (with modules loaded) no check reports
// anything, and the system-call table has exactly as many entries as the kernel's own
// headers say (__NR_syscalls in linux-headers' unistd_64.h).
func TestIntegrityClean(t *testing.T) {
	g := bootGuest(t)
	_, res := integrity(t, g.src)
	for _, r := range res {
		if len(r.Findings) > 0 || r.Checked == 0 {
			t.Errorf("clean guest: check %s: %d findings, %d checked", r.Check, len(r.Findings), r.Checked)
		}
		if r.Check != CheckSyscalls {
			continue
		}
		if want := fmt.Sprintf("sys_call_table: %d entries", nrSyscalls(t, g.kernel(t).Release)); !strings.Contains(r.Coverage, want) {
			t.Errorf("system-call tables: %s; the kernel's headers say %q", r.Coverage, want)
		}
	}
}

// nrSyscalls reads __NR_syscalls from the kernel's linux-headers package
// (arch/x86/include/generated/uapi/asm/unistd_64.h).
func nrSyscalls(t *testing.T, release string) int {
	t.Helper()
	p := filepath.Join("/lib/modules", release, "build/arch/x86/include/generated/uapi/asm/unistd_64.h")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (install linux-headers-%s)", err, release)
	}
	m := regexp.MustCompile(`#define __NR_syscalls (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no __NR_syscalls", p)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
