package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/domainm/domainm/appliance/internal/supervisor"
	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/linux"
)

func init() {
	register(command{name: "inspect", summary: "describe a Linux target from its memory: kernel, KASLR, processes, modules", run: runInspect,
		exits: []exit{
			{ExitClean, "described, and no kernel integrity check failed"},
			{ExitFindings, "a kernel integrity check failed (syscall-table, idt, hidden-module, hidden-task)"},
			{ExitError, "unreadable source, no Linux kernel found in it, or a missing required flag"},
		},
		examples: []string{
			"domainm inspect --source file:/dev/shm/web-1.ram",
			"domainm inspect --source elf:/var/tmp/web-1.core --disk /var/lib/libvirt/images/web-1.qcow2 --json | jq -r '.processes[] | select(.user.id == \"0\") | .name'",
		}})
}

// InspectResult is what `domainm inspect --json` prints.
type InspectResult struct {
	Source    string           `json:"source"`
	Kernel    InspectKernel    `json:"kernel"`
	Processes []InspectProcess `json:"processes"`
	Modules   []InspectModule  `json:"modules"`
	// Syscalls is the system-call table check: every entry, and those pointing outside
	// kernel text.
	Syscalls InspectSyscalls `json:"syscall_table"`
	// Checks are the kernel-integrity checks: system-call tables, IDT, modules hidden
	// from the module list, tasks hidden from the task list.
	Checks []linux.CheckResult `json:"checks"`
	// Symbols is the optional cross-check of a System.map (--symbols, --disk).
	Symbols *linux.SymbolCheck `json:"symbol_cross_check,omitempty"`
	// Timings in seconds: deriving the layout (kallsyms, banner, page tables) from cold,
	// loading the kernel's BTF, and walking the task and module lists.
	LayoutSeconds float64 `json:"layout_seconds"`
	BTFSeconds    float64 `json:"btf_seconds"`
	ListSeconds   float64 `json:"list_seconds"`
	ChecksSeconds float64 `json:"checks_seconds"`
}

// InspectKernel is the kernel's layout.
type InspectKernel struct {
	Banner     string `json:"banner"`
	Release    string `json:"release"`
	TextVA     string `json:"text_virtual"`
	TextPA     string `json:"text_physical"`
	VirtShift  string `json:"kaslr_virtual_shift"`
	PhysShift  string `json:"kaslr_physical_shift"`
	PGD        string `json:"page_table_root"`
	Levels     int    `json:"paging_levels"`
	PageOffset string `json:"page_offset_base,omitempty"`
	Symbols    int    `json:"symbols"`
	BTFBytes   int    `json:"btf_bytes"`
}

// InspectProcess is one task of the kernel's task list (a thread-group leader), with
// ECS process.* field names where ECS has one, as the alert events' process.* (pid,
// name) and in ECS's forms: parent.pid, user.id (process.user.id) as a string, args,
// args_count and command_line (args joined by spaces, as ECS's example). What ECS has
// no field for is under domainm: the tgid, kernel_thread, the start time since boot
// (ECS's process.start is a wall-clock date, which the guest's memory does not give),
// the page-table root and the task_struct ("0x..." addresses), and why the command
// line could not be read.
type InspectProcess struct {
	PID         int                `json:"pid"`
	Name        string             `json:"name"` // task_struct.comm
	Parent      InspectParent      `json:"parent"`
	User        InspectUser        `json:"user"`
	Args        []string           `json:"args,omitempty"`
	ArgsCount   int                `json:"args_count,omitempty"`
	CommandLine string             `json:"command_line,omitempty"`
	DomainM     InspectProcessMore `json:"domainm"`
}

// InspectParent is ECS process.parent.*.
type InspectParent struct {
	PID int `json:"pid"`
}

// InspectUser is ECS process.user.* (user.id is a keyword: a string).
type InspectUser struct {
	ID string `json:"id"`
}

// InspectProcessMore is what inspect tells of a process that ECS has no field for.
type InspectProcessMore struct {
	TGID         int     `json:"tgid"`
	KernelThread bool    `json:"kernel_thread"`
	StartSeconds float64 `json:"start_seconds"` // since boot
	PGD          string  `json:"page_table_root,omitempty"`
	Task         string  `json:"task_struct"`
	CmdlineError string  `json:"cmdline_error,omitempty"`
}

// inspectProcess gives a task of the task list its --json form.
func inspectProcess(p linux.Process) InspectProcess {
	ip := InspectProcess{PID: p.PID, Name: p.Comm, Parent: InspectParent{PID: p.PPID},
		User: InspectUser{ID: strconv.FormatUint(uint64(p.UID), 10)}, Args: p.Cmdline, ArgsCount: len(p.Cmdline),
		CommandLine: strings.Join(p.Cmdline, " "),
		DomainM: InspectProcessMore{TGID: p.TGID, KernelThread: p.Kernel, StartSeconds: p.Start.Seconds(),
			Task: hexAddr(p.TaskVA), CmdlineError: p.CmdlineErr}}
	if p.PGD != 0 {
		ip.DomainM.PGD = hexAddr(p.PGD)
	}
	return ip
}

// InspectSyscalls is the result of the system-call table check.
type InspectSyscalls struct {
	Entries    int              `json:"entries"`
	Suspicious []InspectSyscall `json:"outside_kernel_text"`
}

// InspectSyscall is a system-call table entry that points outside kernel text.
type InspectSyscall struct {
	NR     int    `json:"nr"`
	Target string `json:"target"`
	Module string `json:"module,omitempty"` // the module whose memory holds the target
}

// InspectModule is one entry of the kernel's module list.
type InspectModule struct {
	Name string `json:"name"`
	Base string `json:"base"`
	Size uint64 `json:"size"`
}

func hexAddr(v uint64) string { return fmt.Sprintf("%#x", v) }

func runInspect(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "inspect", "inspect --source SPEC [--layout LAYOUT] [--symbols FILE | --disk IMG] [--json]",
		`Describes a Linux target from its guest-physical memory alone, with no agent in the
guest and no symbol file: the kernel's banner and release, the KASLR virtual and physical
shifts, the kernel page-table root and paging depth, then the processes (pid, ppid, tgid,
uid, start time since boot, comm, page-table root, command line read from the process's
own pages) from the kernel's task list and the
loaded modules (name, base, size) from its module list, and runs the kernel-integrity
checks; any finding makes the exit code 1:
  syscall-table  every entry of every system-call table the kernel has (sys_call_table,
                 ia32_sys_call_table, x32_sys_call_table; all entries, not a fixed
                 count) must point into kernel text
  idt            every present IDT gate must point into kernel text
  hidden-module  a live struct module found in the module area by its structure
                 (validated through BTF) must be on the module list
  hidden-task    a task owning a pid in the pid hash (init_pid_ns's IDR) or running on
                 a CPU must be on the task list (through its thread-group leader)
A hook's target is named: the module that owns it (hidden or not) and its symbol there.

--symbols FILE (a System.map) or --disk IMG (the target's disk image, read without
mounting it: /boot/System.map-RELEASE) cross-checks the guest's kallsyms against a
symbol file and says which symbols it lacks. It is optional: memory alone suffices
(Debian's /boot/System.map is an 83-byte placeholder; the real one is in the -dbg
package).

Symbols come from the kernel's own kallsyms tables, found in memory by their structure;
struct layouts from the kernel's own BTF (CONFIG_DEBUG_INFO_BTF, as in Debian, Ubuntu,
Fedora and RHEL kernels), so no per-version offsets are involved. x86-64 guests only
(4- and 5-level paging).

The target may run while it is inspected; a list that changes under the walk can end in
an error (run again, or pause the target). Everything read is treated as hostile: walks
are bounded and never follow a pointer outside guest RAM.

Memory sources (--source) and layouts (--layout) are those of scan-memory:
  file:PATH   QEMU memory-backend-file RAM file or a raw dump
  elf:PATH    ELF core from QEMU dump-guest-memory (paging=false)
  xen:DOMID   a Xen domain
  xen:granted the Xen domain named by xenstore domainm/target (domainm-xen grant)`)
	source := fs.String("source", "", "memory source `SPEC` (file:PATH, elf:PATH, xen:DOMID, xen:granted)")
	var layout memscan.Layout
	fs.Var(&layout, "layout", "how file offsets map to guest-physical addresses (`LAYOUT`: flat, q35, pc, split:SIZE, list)")
	asJSON := fs.Bool("json", false, "print one JSON object: processes[] with ECS process.* names (pid, name, parent.pid, user.id, args, command_line; the rest under domainm), addresses as \"0x...\"")
	symbols := fs.String("symbols", "", "cross-check the guest's kallsyms with this System.map `FILE`")
	disk := fs.String("disk", "", "cross-check with /boot/System.map-RELEASE read from this disk `IMG` (raw or qcow2)")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	if *source == "" {
		return ExitError, errors.New("--source is required (see --help)")
	}
	spec, err := supervisor.ResolveSpec(*source)
	if err != nil {
		return ExitError, err
	}
	src, err := memscan.Open(spec, memscan.OpenOptions{Layout: layout})
	if err != nil {
		return ExitError, err
	}
	defer src.Close()
	if *symbols != "" && *disk != "" {
		return ExitError, errors.New("--symbols and --disk: give one")
	}
	res, k, err := inspect(*source, src)
	if err != nil {
		return ExitError, err
	}
	switch {
	case *symbols != "":
		res.Symbols, err = symbolsFile(k, *symbols)
	case *disk != "":
		res.Symbols, err = symbolsDisk(k, *disk)
	}
	if err != nil {
		return ExitError, err
	}
	code := ExitClean
	if len(res.Syscalls.Suspicious) > 0 || checkFindings(res.Checks) > 0 {
		code = ExitFindings
	}
	if *asJSON {
		return code, json.NewEncoder(env.Stdout).Encode(res)
	}
	return code, printInspect(env.Stdout, res)
}

func inspect(spec string, src memscan.Source) (*InspectResult, *linux.Kernel, error) {
	k, err := linux.Find(src)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", spec, err)
	}
	t0 := time.Now()
	ty, err := k.LoadBTF()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: kernel %s: %w", spec, k.Release, err)
	}
	tBTF := time.Since(t0)
	in, err := linux.NewInspector(k, ty)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: kernel %s: %w", spec, k.Release, err)
	}
	t1 := time.Now()
	procs, err := in.Processes()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: processes: %w", spec, err)
	}
	mods, err := in.Modules()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: modules: %w", spec, err)
	}
	sc, err := in.SyscallTable(mods)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: system-call table: %w", spec, err)
	}
	res := &InspectResult{
		Source: spec,
		Kernel: InspectKernel{
			Banner: k.Banner, Release: k.Release, TextVA: hexAddr(k.TextVA), TextPA: hexAddr(k.TextPA),
			VirtShift: fmt.Sprintf("%#x", k.VirtShift), PhysShift: fmt.Sprintf("%#x", k.PhysShift),
			PGD: hexAddr(k.PGD), Levels: k.Levels, Symbols: len(k.Syms.Symbols), BTFBytes: ty.Size,
		},
		Processes:     []InspectProcess{},
		Modules:       []InspectModule{},
		LayoutSeconds: k.Took.Seconds(),
		BTFSeconds:    tBTF.Seconds(),
		ListSeconds:   time.Since(t1).Seconds(),
	}
	if k.PageOffset != 0 {
		res.Kernel.PageOffset = hexAddr(k.PageOffset)
	}
	for _, p := range procs {
		res.Processes = append(res.Processes, inspectProcess(p))
	}
	res.Syscalls = InspectSyscalls{Entries: len(sc), Suspicious: []InspectSyscall{}}
	for _, e := range sc {
		if e.Suspicious() {
			res.Syscalls.Suspicious = append(res.Syscalls.Suspicious, InspectSyscall{NR: e.NR, Target: hexAddr(e.Target), Module: e.Module})
		}
	}
	for _, m := range mods {
		res.Modules = append(res.Modules, InspectModule{Name: m.Name, Base: hexAddr(m.Base), Size: m.Size})
	}
	t2 := time.Now()
	res.Checks = in.Integrity(procs, mods)
	res.ChecksSeconds = time.Since(t2).Seconds()
	return res, k, nil
}

func printInspect(w io.Writer, r *InspectResult) error {
	k := r.Kernel
	fmt.Fprintf(w, "source:   %s\nkernel:   %s\nrelease:  %s\n", r.Source, k.Banner, k.Release)
	fmt.Fprintf(w, "KASLR:    virtual shift %s, physical shift %s (_text %s at physical %s)\n", k.VirtShift, k.PhysShift, k.TextVA, k.TextPA)
	fmt.Fprintf(w, "paging:   %d-level, kernel page-table root at physical %s", k.Levels, k.PGD)
	if k.PageOffset != "" {
		fmt.Fprintf(w, ", direct map at %s", k.PageOffset)
	}
	fmt.Fprintf(w, "\nsymbols:  %d (kallsyms in guest memory); BTF %d KiB\n", k.Symbols, k.BTFBytes>>10)
	fmt.Fprintf(w, "timing:   layout %.3fs, BTF %.3fs, processes and modules %.3fs, integrity checks %.3fs\n\n", r.LayoutSeconds, r.BTFSeconds, r.ListSeconds, r.ChecksSeconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "PID\tPPID\tTGID\tUID\tSTART\tPGD\tCOMM\tCMDLINE\n")
	for _, p := range r.Processes {
		x := p.DomainM
		comm := p.Name
		if x.KernelThread {
			comm = "[" + comm + "]"
		}
		pgd := x.PGD
		if pgd == "" {
			pgd = "-"
		}
		cmd := p.CommandLine
		if x.CmdlineError != "" {
			cmd = "(" + x.CmdlineError + ")"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%.2f\t%s\t%s\t%s\n", p.PID, p.Parent.PID, x.TGID, p.User.ID, x.StartSeconds, pgd, comm, cmd)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d processes, %d modules\n\n", len(r.Processes), len(r.Modules))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "MODULE\tBASE\tSIZE\n")
	for _, m := range r.Modules {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", m.Name, m.Base, m.Size)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	printChecks(w, r.Checks, r.Symbols)
	return nil
}
