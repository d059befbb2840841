package linux

import (
	"fmt"
	"slices"
)

// The x86-64 module area (arch/x86/include/asm/pgtable_64_types.h): MODULES_VADDR is
// __START_KERNEL_map + KERNEL_IMAGE_SIZE (1 GiB with KASLR, 512 MiB without), so the
// scan starts at the lower of the two and skips the kernel image below it.
const (
	modulesVAddrNoKASLR = 0xffffffffa0000000
	modulesEnd          = 0xffffffffff000000
	maxModuleAreaPages  = 1 << 18 // 1 GiB of 4 KiB pages: the whole area
	maxModuleChunk      = 64 << 20
)

// Values a module's list_head holds after list_del (include/linux/poison.h, with
// CONFIG_ILLEGAL_POINTER_VALUE 0xdead000000000000 on x86-64).
const (
	listPoison1 = 0xdead000000000100
	listPoison2 = 0xdead000000000122
)

// modLayout is where struct module keeps what a candidate is validated by, from BTF.
type modLayout struct {
	size                 uint64 // sizeof(struct module)
	state, name, nameLen uint64
	list                 uint64 // list.next; list.prev follows it
	mkobjMod             uint64 // mkobj.mod: points back at the module
	textBase, textSize   uint64 // core_layout.base/size (mem[MOD_TEXT] from 6.4)
	hasMod               bool
}

func (in *Inspector) modLayout() (modLayout, error) {
	o := in.o
	l := modLayout{state: o.modState, name: o.modName, nameLen: o.modNameLen, list: o.modList,
		textBase: o.modBase + o.layoutBase, textSize: o.modBase + o.layoutSz}
	var err error
	if l.size, err = in.T.Sizeof("module"); err != nil {
		return l, err
	}
	if f, err := in.T.Field("module", "mkobj.mod"); err == nil {
		l.mkobjMod, l.hasMod = f.Offset, true
	}
	return l, nil
}

// moduleCandidate is a struct module found in module memory by its structure.
type moduleCandidate struct {
	VA    uint64
	Name  string
	State uint32
}

// scanModules returns the struct module candidates in buf, the bytes of virtual
// memory at va: 8-byte aligned, with a state of live, coming, going or unformed, a
// printable NUL-terminated name of module-name characters, list pointers that are
// kernel addresses or list_del's poison, and a reference to itself (mkobj.mod, as
// mod_sysfs_setup sets it) or an address inside its own core text and data.
func scanModules(buf []byte, va uint64, l modLayout) []moduleCandidate {
	var out []moduleCandidate
	if l.size == 0 || l.nameLen == 0 || l.size > uint64(len(buf)) {
		return nil
	}
	for off := uint64(0); off+l.size <= uint64(len(buf)); off += 8 {
		m := buf[off : off+l.size]
		st := le.Uint32(m[l.state:])
		if st > 3 {
			continue
		}
		name, ok := moduleName(m[l.name : l.name+l.nameLen])
		if !ok {
			continue
		}
		if !listPointer(le.Uint64(m[l.list:])) || !listPointer(le.Uint64(m[l.list+8:])) {
			continue
		}
		here := va + off
		self := l.hasMod && le.Uint64(m[l.mkobjMod:]) == here
		base := le.Uint64(m[l.textBase:])
		size := uint64(le.Uint32(m[l.textSize:]))
		if !self && (base == 0 || here < base || here-base >= size) {
			continue
		}
		out = append(out, moduleCandidate{VA: here, Name: name, State: st})
	}
	return out
}

// moduleName checks a struct module's name field: a NUL-terminated run of letters,
// digits, '_' and '-' (the kernel turns '-' into '_'; both are accepted).
func moduleName(b []byte) (string, bool) {
	for i, c := range b {
		switch {
		case c == 0:
			return string(b[:i]), i > 0
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return "", false
		}
	}
	return "", false
}

func listPointer(p uint64) bool {
	return p >= 0xffff800000000000 || p == listPoison1 || p == listPoison2
}

// moduleCandidates scans the module area's mapped pages for struct module by
// structure (as Volatility's linux.hidden_modules does), whether or not the module
// list links them. It returns the validated candidates and how many pages it read.
func (in *Inspector) moduleCandidates() ([]moduleCandidate, int, error) {
	l, err := in.modLayout()
	if err != nil {
		return nil, 0, err
	}
	lo := uint64(modulesVAddrNoKASLR)
	if end, err := in.K.Syms.Addr("_end"); err == nil && end > lo && end < modulesEnd {
		lo = (end + 0xfff) &^ 0xfff
	}
	type page struct{ va, pa uint64 }
	var pages []page
	w := newPTWalker(in.K.p, in.K.Levels, maxModuleAreaPages)
	err = w.walk(in.K.PGD, lo, modulesEnd, func(va, pa, size uint64) {
		for off := uint64(0); off < size && len(pages) <= maxModuleAreaPages; off += 4096 {
			if va+off >= lo && va+off < modulesEnd {
				pages = append(pages, page{va + off, pa + off})
			}
		}
	})
	if err != nil {
		return nil, 0, fmt.Errorf("module area %#x..%#x page tables: %w", lo, uint64(modulesEnd), err)
	}
	if len(pages) > maxModuleAreaPages {
		return nil, 0, fmt.Errorf("module area %#x..%#x: more than %d mapped pages", lo, uint64(modulesEnd), maxModuleAreaPages)
	}
	var out []moduleCandidate
	// Runs of virtually contiguous pages, so that a struct module across a page
	// boundary is seen whole; a page outside RAM ends a run.
	for i := 0; i < len(pages); {
		var buf []byte
		start := pages[i].va
		for ; i < len(pages) && pages[i].va == start+uint64(len(buf)) && len(buf) < maxModuleChunk; i++ {
			var b [4096]byte
			if err := in.K.p.read(pages[i].pa, b[:]); err != nil {
				i++
				break
			}
			buf = append(buf, b[:]...)
		}
		out = append(out, scanModules(buf, start, l)...)
	}
	return out, len(pages), nil
}

// hiddenModules returns the live modules found in module memory that the module list
// (listed) does not link. A candidate is confirmed by a second walk of the list, so a
// module that was loading or unloading between the two reads is not reported.
func (in *Inspector) hiddenModules(listed []Module) ([]Module, int, error) {
	cands, pages, err := in.moduleCandidates()
	if err != nil {
		return nil, pages, err
	}
	onList := map[uint64]bool{}
	for _, m := range listed {
		onList[m.ModuleVA] = true
	}
	var hidden []Module
	for _, c := range cands {
		if c.State != 0 || onList[c.VA] {
			continue
		}
		m, err := in.module(c.VA)
		if err != nil {
			return nil, pages, err
		}
		hidden = append(hidden, m)
	}
	if len(hidden) == 0 {
		return nil, pages, nil
	}
	again, err := in.Modules()
	if err != nil {
		return nil, pages, fmt.Errorf("module list, second walk: %w", err)
	}
	hidden = slices.DeleteFunc(hidden, func(h Module) bool {
		return slices.ContainsFunc(again, func(m Module) bool { return m.ModuleVA == h.ModuleVA })
	})
	return hidden, pages, nil
}
