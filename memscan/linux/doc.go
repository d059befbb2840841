// Package linux describes a Linux guest from its guest-physical memory alone: where the
// kernel is (its banner and release, the KASLR physical and virtual shifts, the kernel
// page-table root), virtual-to-physical translation (x86-64, 4- and 5-level paging with
// 1 GiB and 2 MiB pages), the kernel's own symbols (its kallsyms tables, found by their
// structure), its own types (its BTF, parsed with github.com/cilium/ebpf/btf) and, from
// those, its processes and modules. It is to guest memory what diskscan is to disks: a
// deterministic description, with no agent in the guest and no per-version offsets.
//
// # Kernel-integrity checks
//
// Inspector.Integrity runs four checks, each a CheckResult with what it covered and
// its Findings (a stable Key that pairs "new" with "gone", a summary and evidence):
//
//   - syscall-table: every entry of sys_call_table, ia32_sys_call_table and
//     x32_sys_call_table that the kernel has (sized by the next symbol, so all of
//     them: 451 in Debian's 6.1, whose BHI-mitigated dispatch kept only the first)
//     must point into kernel text [_stext, _etext).
//   - idt: every present gate of idt_table likewise; reserved exception vectors that
//     still point at their early_idt_handler_array stubs (which boot leaves) are not
//     findings. The read-only alias the CPUs load (cpu_entry_area, 0xfffffe0000000000)
//     must map idt_table's page; if it maps another, that is a finding and its gates
//     are checked too. (IDTR itself is CPU state, not memory: not seen.)
//   - hidden-module: the module area's mapped pages (page tables walked whole) are
//     scanned for struct module by structure, with offsets from BTF: a module name,
//     a state, list pointers that are kernel addresses or list_del poison, and a
//     reference to itself (mkobj.mod, or an address inside its own core layout). A live
//     candidate not on the module list is hidden.
//   - hidden-task: the tasks owning a pid in init_pid_ns's IDR (an XArray walk) and the
//     task each CPU's run queue runs (rq->curr, not its idle task) must have their
//     thread-group leader on the task list.
//
// A hook's target is named by the module that holds it, hidden ones included, and by
// that module's own symbol table (mod->kallsyms). Findings about lists are confirmed
// by a second walk, so a task or module that came or went between two reads of a
// running guest is not reported. dmkit (linuxtest/dmkit) is the rootkit the tests load.
//
// CompareSymbols cross-checks an optional System.map with the guest's kallsyms and says,
// for each symbol the package reads (UsedSymbols), what each source has.
//
// # Attribution and seams
//
// A Guest is a layout derived once (OpenGuest: Find, LoadBTF, NewInspector); its
// Snapshot re-reads, pass after pass, what changes: the user processes (pid, comm,
// page-table root; task_structs read through the direct map) and the modules' memory.
// Snapshot.Attribute says who holds guest-physical addresses (the processes mapping
// their pages, with virtual addresses; else a module, the kernel image or the direct
// map), walking each process's user page tables whole tables at a time and looking only
// for the wanted frames. Snapshot.Seams finds, in the same kind of walk over every
// process, every module and the vmalloc area, the page boundaries whose two pages are
// not adjacent in physical memory (memscan.Seam); ScanVirtual attributes a pass's
// matches and scans those seams in one walk, and AddVirtual merges what crosses them.
// A walk whose page tables lie in blocks the memory pass found unchanged is not done
// again (Snapshot.Since, spaces.go): unchanged passes read almost no page tables.
//
// # Security
//
// Guest memory is attacker-controlled. Every pointer read from it is hostile: page walks
// never read a table outside the source's RAM ranges, list walks are bounded and detect
// loops, lengths are capped, and errors say what was being read and where.
package linux
