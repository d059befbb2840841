package linux

import (
	"fmt"
	"sort"
)

const maxSyscalls = 4096

// SyscallEntry is one entry of sys_call_table.
type SyscallEntry struct {
	Table  string // sys_call_table, ia32_sys_call_table or x32_sys_call_table
	NR     int
	Target uint64
	Symbol string // kernel symbol at Target ("name+0xoff"), if any
	Module string // module whose memory holds Target, if any
	InText bool   // Target is in kernel text (_stext.._etext)
}

// Suspicious says whether the entry points outside kernel text.
func (e SyscallEntry) Suspicious() bool { return !e.InText }

// SymbolAt returns the name of the symbol at or below va, with the offset ("name+0x10").
func (k *Kallsyms) SymbolAt(va uint64) (string, bool) {
	if k.sorted == nil {
		for i, s := range k.Symbols {
			if s.Addr >= startKernelMap {
				k.sorted = append(k.sorted, i)
			}
		}
		sort.SliceStable(k.sorted, func(a, b int) bool { return k.Symbols[k.sorted[a]].Addr < k.Symbols[k.sorted[b]].Addr })
	}
	j := sort.Search(len(k.sorted), func(i int) bool { return k.Symbols[k.sorted[i]].Addr > va }) - 1
	if j < 0 {
		return "", false
	}
	s := k.Symbols[k.sorted[j]]
	if va == s.Addr {
		return s.Name, true
	}
	return fmt.Sprintf("%s+%#x", s.Name, va-s.Addr), true
}

// nextSymbolAfter returns the lowest symbol address above va.
func (k *Kallsyms) nextSymbolAfter(va uint64) (uint64, bool) {
	k.SymbolAt(va) // builds the index
	j := sort.Search(len(k.sorted), func(i int) bool { return k.Symbols[k.sorted[i]].Addr > va })
	if j >= len(k.sorted) {
		return 0, false
	}
	return k.Symbols[k.sorted[j]].Addr, true
}

// SyscallTables are the x86-64 kernel's system-call tables: native, 32-bit emulation
// (CONFIG_IA32_EMULATION) and x32 (CONFIG_X86_X32_ABI). Kernels with the BHI
// mitigation (6.9, and the stable 6.1 and 6.6 updates of 2024) dispatch through a
// switch and keep only sys_call_table, for tracing; the others are checked when present.
var SyscallTables = []string{"sys_call_table", "ia32_sys_call_table", "x32_sys_call_table"}

// SyscallTable reads every entry of sys_call_table (its length is the distance to the
// next kernel symbol, less trailing zero padding) and says where each points: kernel text, a module, or neither.
func (in *Inspector) SyscallTable(mods []Module) ([]SyscallEntry, error) {
	return in.syscallTable("sys_call_table", mods)
}

// syscallTable reads every entry of the system-call table called name.
func (in *Inspector) syscallTable(name string, mods []Module) ([]SyscallEntry, error) {
	k := in.K.Syms
	table, err := k.Addr(name)
	if err != nil {
		return nil, err
	}
	stext, err := k.Addr("_stext")
	if err != nil {
		return nil, err
	}
	etext, err := k.Addr("_etext")
	if err != nil {
		return nil, err
	}
	next, ok := k.nextSymbolAfter(table)
	if !ok || next-table < 8 || (next-table)/8 > maxSyscalls {
		return nil, fmt.Errorf("%s at %#x: cannot size it from the next symbol (%#x)", name, table, next)
	}
	n := int((next - table) / 8)
	raw := make([]byte, 8*n)
	if err := in.K.Read(table, raw); err != nil {
		return nil, fmt.Errorf("reading %s at %#x: %w", name, table, err)
	}
	// The next symbol may be aligned past the table: trailing zero words are padding
	// (a zero entry would be a NULL handler, which the kernel never has).
	for n > 0 && le.Uint64(raw[8*(n-1):]) == 0 {
		n--
	}
	out := make([]SyscallEntry, n)
	for i := range out {
		t := le.Uint64(raw[8*i:])
		e := SyscallEntry{Table: name, NR: i, Target: t, InText: t >= stext && t < etext}
		if e.InText {
			e.Symbol, _ = k.SymbolAt(t)
		}
		for _, m := range mods {
			if m.Owns(t) || len(m.Ranges) == 0 && t >= m.Base && t-m.Base < m.Size {
				e.Module = m.Name
			}
		}
		out[i] = e
	}
	return out, nil
}
