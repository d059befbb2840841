package linux

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits on a System.map (Debian's real one, in the -dbg package, is ~6 MiB and
// ~200,000 lines).
const (
	MaxSystemMap     = 64 << 20
	maxSystemMapLine = 4096
)

// UsedSymbols are the kernel symbols this package reads, from the guest's kallsyms.
var UsedSymbols = []string{"_text", "_stext", "_etext", "_end", "linux_banner", "init_top_pgt",
	"page_offset_base", "__start_BTF", "__stop_BTF", "init_task", "modules", "sys_call_table",
	"idt_table", "init_pid_ns", "runqueues", "__per_cpu_offset", "nr_cpu_ids"}

// ParseSystemMap reads a System.map ("ADDRESS TYPE NAME" per line, as nm prints it),
// at most MaxSystemMap bytes. Lines that are not of that form are counted in bad, not
// fatal: a placeholder file (Debian's /boot/System.map-RELEASE is an 83-byte note
// pointing at the -dbg package) gives no symbols and one bad line.
func ParseSystemMap(r io.Reader) (syms []Symbol, bad int, err error) {
	sc := bufio.NewScanner(io.LimitReader(r, MaxSystemMap+1))
	sc.Buffer(make([]byte, 0, 64<<10), maxSystemMapLine)
	read := 0
	for sc.Scan() {
		line := sc.Text()
		if read += len(line) + 1; read > MaxSystemMap {
			return nil, bad, fmt.Errorf("symbol map larger than %d MiB", MaxSystemMap>>20)
		}
		f := strings.Fields(line)
		// The type is one printable letter (nm's: T, t, D, ...); a NUL or a control byte
		// is not a type (found by FuzzParseSystemMap).
		if len(f) != 3 || len(f[1]) != 1 || f[1][0] <= ' ' || f[1][0] >= 0x7f {
			bad++
			continue
		}
		a, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			bad++
			continue
		}
		syms = append(syms, Symbol{Name: f[2], Type: f[1][0], Addr: a})
	}
	if err := sc.Err(); err != nil {
		return nil, bad, fmt.Errorf("reading System.map: %w", err)
	}
	return syms, bad, nil
}

// SymbolCheck is a System.map compared with the guest's own kallsyms.
type SymbolCheck struct {
	File     string `json:"file"`
	Symbols  int    `json:"symbols"`   // symbols in the file
	BadLines int    `json:"bad_lines"` // lines that are not "ADDRESS TYPE NAME"
	// Compared counts the file's kernel-address symbols also in kallsyms; Agree those at
	// the same address once the KASLR shift is added.
	Compared int `json:"compared"`
	Agree    int `json:"agree"`
	// Differ lists (at most 20) symbols whose addresses disagree.
	Differ []string `json:"differ,omitempty"`
	// Used says, for each symbol this package reads, what each source has.
	Used []UsedSymbol `json:"used"`
}

// UsedSymbol is one symbol this package reads, in both sources.
type UsedSymbol struct {
	Name     string `json:"name"`
	Kallsyms string `json:"kallsyms,omitempty"`   // runtime address; "" when missing
	Map      string `json:"system_map,omitempty"` // link-time address + KASLR shift; "" when missing
	Status   string `json:"status"`               // agree, differ, missing from System.map, missing from kallsyms, missing from both
}

// CompareSymbols checks a System.map (link-time addresses) against the guest's
// kallsyms (runtime addresses): every symbol in both must differ by the KASLR virtual
// shift. Per-CPU and absolute symbols (below the kernel map) are compared unshifted.
func (k *Kernel) CompareSymbols(file string, syms []Symbol, bad int) SymbolCheck {
	c := SymbolCheck{File: file, Symbols: len(syms), BadLines: bad, Used: []UsedSymbol{}}
	shifted := func(a uint64) uint64 {
		if a >= startKernelMap {
			return a + uint64(k.VirtShift)
		}
		return a
	}
	inMap := map[string]uint64{}
	for _, s := range syms {
		if _, dup := inMap[s.Name]; dup {
			continue // static symbols of the same name: the first, as Lookup does
		}
		inMap[s.Name] = shifted(s.Addr)
		ks, ok := k.Syms.Lookup(s.Name)
		if !ok {
			continue
		}
		c.Compared++
		if ks.Addr == shifted(s.Addr) {
			c.Agree++
		} else if len(c.Differ) < 20 {
			c.Differ = append(c.Differ, fmt.Sprintf("%s: kallsyms %#x, System.map %#x + shift %#x = %#x", s.Name, ks.Addr, s.Addr, k.VirtShift, shifted(s.Addr)))
		}
	}
	for _, name := range UsedSymbols {
		u := UsedSymbol{Name: name}
		ks, inK := k.Syms.Lookup(name)
		ma, inM := inMap[name]
		if inK {
			u.Kallsyms = hex(ks.Addr)
		}
		if inM {
			u.Map = hex(ma)
		}
		switch {
		case inK && inM && ks.Addr == ma:
			u.Status = "agree"
		case inK && inM:
			u.Status = "differ"
		case inK:
			u.Status = "missing from System.map"
		case inM:
			u.Status = "missing from kallsyms"
		default:
			u.Status = "missing from both"
		}
		c.Used = append(c.Used, u)
	}
	return c
}
