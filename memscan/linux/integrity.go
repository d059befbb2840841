package linux

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The kernel-integrity checks, by name.
const (
	CheckSyscalls     = "syscall-table"
	CheckIDT          = "idt"
	CheckHiddenModule = "hidden-module"
	CheckHiddenTask   = "hidden-task"
)

// Finding is one kernel-integrity violation, with its evidence.
type Finding struct {
	Check string `json:"check"`
	// Key identifies the violation from pass to pass: the same hook, module or task
	// gives the same key while it stays as it is (what "new" and "gone" pair on).
	Key      string            `json:"key"`
	Summary  string            `json:"summary"`
	Evidence map[string]string `json:"evidence"`
}

// CheckResult is one check's outcome: what it covered, what it found, or why it could
// not run (Err; the other checks still run).
type CheckResult struct {
	Check    string        `json:"check"`
	Checked  int           `json:"checked"`  // entries examined: table entries, gates, module-area pages, pids
	Coverage string        `json:"coverage"` // what was covered, in words
	Findings []Finding     `json:"findings"`
	Err      string        `json:"error,omitempty"`
	Took     time.Duration `json:"-"`
}

// Integrity runs every kernel-integrity check against the task and module lists
// (Processes and Modules, read just before): modules hidden from the list, system-call
// table entries and IDT gates that point outside kernel text (naming the module that
// owns the target, hidden ones included), tasks hidden from the task list. Reading a
// running guest can race with it; list-based findings are confirmed by a second walk.
func (in *Inspector) Integrity(procs []Process, mods []Module) []CheckResult {
	owners := slices.Clone(mods)
	hiddenVA := map[uint64]bool{}
	var out []CheckResult
	run := func(name string, f func(r *CheckResult) error) {
		r := CheckResult{Check: name, Findings: []Finding{}}
		t0 := time.Now()
		if err := f(&r); err != nil {
			r.Err = err.Error()
		}
		r.Took = time.Since(t0)
		out = append(out, r)
	}
	run(CheckHiddenModule, func(r *CheckResult) error {
		hidden, pages, err := in.hiddenModules(mods)
		r.Checked = pages
		r.Coverage = fmt.Sprintf("%d mapped pages of the module area scanned for struct module; %d modules on the list", pages, len(mods))
		for _, m := range hidden {
			hiddenVA[m.ModuleVA] = true
			owners = append(owners, m)
			r.Findings = append(r.Findings, Finding{
				Check:   CheckHiddenModule,
				Key:     fmt.Sprintf("module %s at %#x", m.Name, m.ModuleVA),
				Summary: fmt.Sprintf("module %s (struct module at %#x, %d bytes at %#x) is in memory and live but not on the module list", m.Name, m.ModuleVA, m.Size, m.Base),
				Evidence: map[string]string{"module": m.Name, "struct_module": hex(m.ModuleVA), "base": hex(m.Base),
					"size": strconv.FormatUint(m.Size, 10), "state": strconv.Itoa(m.State)},
			})
		}
		return err
	})
	text, err := in.textRange()
	run(CheckSyscalls, func(r *CheckResult) error {
		if err != nil {
			return err
		}
		var cov []string
		for _, name := range SyscallTables {
			if _, ok := in.K.Syms.Lookup(name); !ok && name != "sys_call_table" {
				cov = append(cov, name+": not in this kernel")
				continue
			}
			es, err := in.syscallTable(name, owners)
			if err != nil {
				return err
			}
			r.Checked += len(es)
			cov = append(cov, fmt.Sprintf("%s: %d entries", name, len(es)))
			for _, e := range es {
				if e.InText {
					continue
				}
				ev := in.targetEvidence(e.Target, owners, hiddenVA)
				ev["table"], ev["nr"] = name, strconv.Itoa(e.NR)
				r.Findings = append(r.Findings, Finding{
					Check:    CheckSyscalls,
					Key:      fmt.Sprintf("%s[%d] -> %#x", name, e.NR, e.Target),
					Summary:  fmt.Sprintf("%s[%d] points outside kernel text, to %s", name, e.NR, where(ev)),
					Evidence: ev,
				})
			}
		}
		r.Coverage = strings.Join(cov, "; ")
		return nil
	})
	run(CheckIDT, func(r *CheckResult) error {
		if err != nil {
			return err
		}
		gates, err := in.IDT()
		if err != nil {
			return err
		}
		early := 0
		check := func(name string, gates []Gate) {
			for _, g := range gates {
				if !g.Present {
					continue
				}
				r.Checked++
				if g.Target >= text[0] && g.Target < text[1] {
					continue
				}
				if in.earlyStub(g) {
					early++
					continue
				}
				ev := in.targetEvidence(g.Target, owners, hiddenVA)
				ev["vector"], ev["table"] = strconv.Itoa(g.Vector), name
				r.Findings = append(r.Findings, Finding{
					Check:    CheckIDT,
					Key:      fmt.Sprintf("%s[%d] -> %#x", strings.Replace(name, "idt_table", "idt", 1), g.Vector, g.Target),
					Summary:  fmt.Sprintf("%s vector %d points outside kernel text, to %s", strings.Replace(name, "idt_table", "IDT", 1), g.Vector, where(ev)),
					Evidence: ev,
				})
			}
		}
		check("idt_table", gates)
		r.Coverage = fmt.Sprintf("idt_table: %d present gates of %d", r.Checked, len(gates))
		// The CPUs load idt_table through a read-only alias: it must map idt_table's page.
		tablePA, aliasPA, mapped, err := in.IDTAlias()
		switch {
		case err != nil:
			return err
		case !mapped:
			r.Coverage += fmt.Sprintf("; no read-only alias at %#x", uint64(cpuEntryAreaIDT))
		case aliasPA&^0xfff == tablePA&^0xfff:
			r.Coverage += fmt.Sprintf("; the CPUs' read-only alias at %#x maps it", uint64(cpuEntryAreaIDT))
		default:
			r.Findings = append(r.Findings, Finding{
				Check:    CheckIDT,
				Key:      fmt.Sprintf("IDT alias -> %#x", aliasPA),
				Summary:  fmt.Sprintf("the IDT the CPUs load (read-only alias at %#x) is physical %#x, not idt_table's %#x", uint64(cpuEntryAreaIDT), aliasPA, tablePA),
				Evidence: map[string]string{"alias": hex(cpuEntryAreaIDT), "alias_physical": hex(aliasPA), "idt_table_physical": hex(tablePA)},
			})
			live, err := in.aliasIDT()
			if err != nil {
				return err
			}
			check("IDT alias", live)
			r.Coverage += fmt.Sprintf("; the CPUs' alias at %#x maps another page, whose gates were checked too", uint64(cpuEntryAreaIDT))
		}
		if early > 0 {
			r.Coverage += fmt.Sprintf("; %d reserved exception vectors still at their early_idt_handler_array stubs, as the kernel leaves them", early)
		}
		return nil
	})
	run(CheckHiddenTask, func(r *CheckResult) error {
		hidden, pids, err := in.hiddenTasks(procs)
		r.Checked = pids
		r.Coverage = fmt.Sprintf("%d pids of init_pid_ns and each CPU's running task against %d tasks on the task list", pids, len(procs))
		for _, h := range hidden {
			r.Findings = append(r.Findings, Finding{
				Check:   CheckHiddenTask,
				Key:     fmt.Sprintf("pid %d %s at %#x", h.PID, h.Comm, h.TaskVA),
				Summary: fmt.Sprintf("task %d (%s) is known to the kernel (%s) but not on the task list", h.PID, h.Comm, strings.Join(h.Seen, ", ")),
				Evidence: map[string]string{"pid": strconv.Itoa(h.PID), "tgid": strconv.Itoa(h.TGID), "ppid": strconv.Itoa(h.PPID),
					"comm": h.Comm, "uid": strconv.FormatUint(uint64(h.UID), 10), "task_struct": hex(h.TaskVA),
					"seen": strings.Join(h.Seen, ", "), "cmdline": strings.Join(h.Cmdline, " ")},
			})
		}
		return err
	})
	return out
}

// earlyStub says whether g is an exception vector (below 32) that still points at its
// stub in early_idt_handler_array: boot installs one per vector, idt_setup_traps
// replaces those of defined exceptions, and the reserved ones keep the stub, in init
// text freed after boot (the CPU never raises them). Stubs are 9 bytes, 13 with IBT's
// endbr64. Without the symbol, the array is taken to start init text, as it does.
func (in *Inspector) earlyStub(g Gate) bool {
	if g.Vector >= 32 {
		return false
	}
	arr, err := in.K.Syms.Addr("early_idt_handler_array")
	if err != nil {
		if arr, err = in.K.Syms.Addr("_sinittext"); err != nil {
			return false
		}
	}
	return g.Target == arr+9*uint64(g.Vector) || g.Target == arr+13*uint64(g.Vector)
}

// textRange is kernel text, [_stext, _etext).
func (in *Inspector) textRange() ([2]uint64, error) {
	s, err1 := in.K.Syms.Addr("_stext")
	e, err2 := in.K.Syms.Addr("_etext")
	if err := errors.Join(err1, err2); err != nil {
		return [2]uint64{}, err
	}
	return [2]uint64{s, e}, nil
}

// targetEvidence says what holds a hook's target: a module (listed or hidden) and its
// symbol there, a kernel symbol outside text, or nothing known.
func (in *Inspector) targetEvidence(t uint64, owners []Module, hidden map[uint64]bool) map[string]string {
	ev := map[string]string{"target": hex(t)}
	for _, m := range owners {
		if !m.Owns(t) {
			continue
		}
		ev["module"] = m.Name
		if hidden[m.ModuleVA] {
			ev["module_hidden"] = "true"
		}
		if s, ok, err := in.ModuleSymbol(m, t); err != nil {
			ev["module_symbol_error"] = err.Error()
		} else if ok {
			ev["symbol"] = s
		}
		return ev
	}
	if s, ok := in.K.Syms.SymbolAt(t); ok && t >= in.K.TextVA && t-in.K.TextVA < kernelImageSpan {
		ev["symbol"] = s
	}
	return ev
}

// where renders a target's evidence for a summary: "0x... (dmkit_kill in hidden module dmkit)".
func where(ev map[string]string) string {
	s := ev["target"]
	var parts []string
	if sym := ev["symbol"]; sym != "" {
		parts = append(parts, sym)
	}
	switch {
	case ev["module"] != "" && ev["module_hidden"] == "true":
		parts = append(parts, "in hidden module "+ev["module"])
	case ev["module"] != "":
		parts = append(parts, "in module "+ev["module"])
	default:
		parts = append(parts, "in no module")
	}
	return s + " (" + strings.Join(parts, " ") + ")"
}

func hex(v uint64) string { return fmt.Sprintf("%#x", v) }
