package linux

import (
	"bytes"
	"errors"
	"fmt"
)

// Bounds on a module's own symbol table (mod->kallsyms), read to name a hook's target.
const (
	maxModSyms    = 1 << 16
	maxModSymName = 128
	elf64SymSize  = 24 // Elf64_Sym: name u32, info u8, other u8, shndx u16, value u64, size u64
)

// ModuleSymbol names the function or object of module m that holds va, from the
// module's own symbol table (mod->kallsyms: symtab, num_symtab, strtab), as
// /proc/kallsyms does for modules: "name+0xoff". ok is false when the module keeps no
// symbols or none covers va.
func (in *Inspector) ModuleSymbol(m Module, va uint64) (string, bool, error) {
	ks, err1 := in.T.Field("module", "kallsyms")
	symtab, err2 := in.T.Field("mod_kallsyms", "symtab")
	num, err3 := in.T.Field("mod_kallsyms", "num_symtab")
	strtab, err4 := in.T.Field("mod_kallsyms", "strtab")
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return "", false, err
	}
	p, err := in.u64(m.ModuleVA + ks.Offset)
	if err != nil || p == 0 {
		return "", false, err
	}
	tab, err := in.u64(p + symtab.Offset)
	if err != nil {
		return "", false, fmt.Errorf("module %s: mod_kallsyms at %#x: symtab: %w", m.Name, p, err)
	}
	n, err := in.u32(p + num.Offset)
	if err != nil {
		return "", false, fmt.Errorf("module %s: mod_kallsyms at %#x: num_symtab: %w", m.Name, p, err)
	}
	str, err := in.u64(p + strtab.Offset)
	if err != nil {
		return "", false, fmt.Errorf("module %s: mod_kallsyms at %#x: strtab: %w", m.Name, p, err)
	}
	if n > maxModSyms {
		return "", false, fmt.Errorf("module %s: %d symbols (limit %d)", m.Name, n, maxModSyms)
	}
	raw := make([]byte, uint64(n)*elf64SymSize)
	if err := in.K.Read(tab, raw); err != nil {
		return "", false, fmt.Errorf("module %s: symtab at %#x: %w", m.Name, tab, err)
	}
	i, ok := closestSymbol(raw, va)
	if !ok {
		return "", false, nil
	}
	s := raw[i*elf64SymSize:]
	name := make([]byte, maxModSymName)
	if err := in.K.Read(str+uint64(le.Uint32(s)), name); err != nil {
		return "", false, fmt.Errorf("module %s: symbol name at %#x: %w", m.Name, str+uint64(le.Uint32(s)), err)
	}
	name, _, _ = bytes.Cut(name, []byte{0})
	if off := va - le.Uint64(s[8:]); off != 0 {
		return fmt.Sprintf("%s+%#x", name, off), true, nil
	}
	return string(name), true, nil
}

// closestSymbol returns the index of the named symbol of an Elf64_Sym table with the
// highest value at or below va, preferring one whose size covers va.
func closestSymbol(raw []byte, va uint64) (int, bool) {
	best, bestV, covers := -1, uint64(0), false
	for i := 0; (i+1)*elf64SymSize <= len(raw); i++ {
		s := raw[i*elf64SymSize:]
		v, size := le.Uint64(s[8:]), le.Uint64(s[16:])
		if le.Uint32(s) == 0 || v == 0 || v > va {
			continue
		}
		c := va-v < size
		if best < 0 || c && !covers || c == covers && v > bestV {
			best, bestV, covers = i, v, c
		}
	}
	return best, best >= 0
}
