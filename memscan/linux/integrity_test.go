package linux

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// flatMem is virtual memory at base backed by a byte slice.
type flatMem struct {
	base uint64
	b    []byte
}

var errOutside = errors.New("outside the flat memory")

func (m *flatMem) Read(va uint64, p []byte) error {
	off := va - m.base
	if va < m.base || off > uint64(len(m.b)) || uint64(len(p)) > uint64(len(m.b))-off {
		return errOutside
	}
	copy(p, m.b[off:])
	return nil
}

func (m *flatMem) put64(va, v uint64) { binary.LittleEndian.PutUint64(m.b[va-m.base:], v) }

// testXA is xa_node as Linux 6.1 lays it out: shift at 0, slots at 40, 64 of them.
var testXA = xaLayout{shift: 0, slots: 40, chunk: 64}

const xaBase = 0xffff888000100000

// node writes an xa_node with shift at va and returns its entry (va + 2).
func (m *flatMem) node(va uint64, shift byte) uint64 {
	m.b[va-m.base] = shift
	return va + 2
}

func TestWalkXArray(t *testing.T) {
	m := &flatMem{base: xaBase, b: make([]byte, 64<<10)}
	root := m.node(xaBase, 6)
	leaf := m.node(xaBase+0x1000, 0)
	m.put64(xaBase+40+8*0, leaf)               // indices 0..63
	m.put64(xaBase+40+8*2, 0xffff888000200040) // index 128: a pointer
	m.put64(xaBase+0x1000+40+8*1, 0xffff888000300000)
	m.put64(xaBase+0x1000+40+8*5, 0xffff888000300100)
	m.put64(xaBase+0x1000+40+8*6, 0x402) // retry entry
	m.put64(xaBase+0x1000+40+8*7, 0x0b)  // a value
	var got []uint64
	var idx []uint64
	err := walkXArray(m, root, testXA, 100, func(i, e uint64) error {
		idx, got = append(idx, i), append(got, e)
		return nil
	})
	if err != nil || len(got) != 3 || idx[0] != 1 || idx[1] != 5 || idx[2] != 128 || got[2] != 0xffff888000200040 {
		t.Fatalf("walk: %v, indices %v entries %#x", err, idx, got)
	}
	// A single entry in the head, and an empty array.
	n := 0
	if err := walkXArray(m, 0xffff888000200040, testXA, 10, func(_, _ uint64) error { n++; return nil }); err != nil || n != 1 {
		t.Errorf("head entry: %v, %d", err, n)
	}
	if err := walkXArray(m, 0, testXA, 10, func(_, _ uint64) error { t.Error("entry in an empty array"); return nil }); err != nil {
		t.Error(err)
	}
	// Hostile trees: a loop, a wrong shift, a node outside memory, too many entries.
	for _, c := range []struct {
		name string
		set  func(m *flatMem)
		want string
	}{
		{"loop", func(m *flatMem) { m.put64(xaBase+0x1000+40+8*9, root) }, "shift"},
		{"self", func(m *flatMem) { m.put64(xaBase+40+8*3, root) }, "reached twice"},
		{"shift", func(m *flatMem) { m.b[0x1000] = 12 }, "shift 12 under a parent of shift 6"},
		{"outside", func(m *flatMem) { m.put64(xaBase+40+8*4, 0xffff888000900002) }, "outside"},
	} {
		mm := &flatMem{base: m.base, b: append([]byte(nil), m.b...)}
		c.set(mm)
		err := walkXArray(mm, root, testXA, 100, func(_, _ uint64) error { return nil })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if err := walkXArray(m, root, testXA, 2, func(_, _ uint64) error { return nil }); err == nil || !strings.Contains(err.Error(), "more than 2") {
		t.Errorf("limit: %v", err)
	}
}

// testMod is a struct module layout for synthetic candidates.
var testMod = modLayout{size: 256, state: 0, list: 8, name: 24, nameLen: 56, mkobjMod: 96, textBase: 128, textSize: 136, hasMod: true}

func putModule(b []byte, off int, va uint64, name string, selfRef bool) {
	m := b[off:]
	binary.LittleEndian.PutUint32(m[testMod.state:], 0)
	binary.LittleEndian.PutUint64(m[testMod.list:], listPoison1)
	binary.LittleEndian.PutUint64(m[testMod.list+8:], listPoison2)
	copy(m[testMod.name:], name+"\x00")
	if selfRef {
		binary.LittleEndian.PutUint64(m[testMod.mkobjMod:], va)
	}
	binary.LittleEndian.PutUint64(m[testMod.textBase:], va-0x1000)
	binary.LittleEndian.PutUint32(m[testMod.textSize:], 0x3000)
}

func TestScanModules(t *testing.T) {
	const va = 0xffffffffc0100000
	b := make([]byte, 8192)
	for i := range b {
		b[i] = 0xcc
	}
	putModule(b, 0x40, va+0x40, "dmkit", true)
	putModule(b, 0x400, va+0x400, "bad name", true)                               // not a module name
	putModule(b, 0x800, va+0x800, "nbd", false)                                   // inside its own text: still valid
	putModule(b, 0xc00, va+0xc00, "x", false)                                     // neither self-pointer nor inside itself
	binary.LittleEndian.PutUint64(b[0xc00+testMod.textBase:], 0xffffffffc0900000) // (made so here)
	got := scanModules(b, va, testMod)
	if len(got) != 2 || got[0].Name != "dmkit" || got[0].VA != va+0x40 || got[1].Name != "nbd" {
		t.Errorf("candidates %+v", got)
	}
	if scanModules(b[:100], va, testMod) != nil {
		t.Error("candidates in a buffer smaller than struct module")
	}
}

func TestParseIDT(t *testing.T) {
	raw := make([]byte, 2*idtGateSize)
	g := raw[idtGateSize:]
	const target = 0xffffffffc0123456
	binary.LittleEndian.PutUint16(g[0:], target&0xffff)
	binary.LittleEndian.PutUint16(g[2:], 0x10)
	binary.LittleEndian.PutUint16(g[4:], 1<<15|3<<13|0xe<<8|2)
	binary.LittleEndian.PutUint16(g[6:], target>>16&0xffff)
	binary.LittleEndian.PutUint32(g[8:], target>>32)
	gs := parseIDT(raw)
	if len(gs) != 2 || gs[0].Present || !gs[1].Present || gs[1].Target != target || gs[1].Type != 14 || gs[1].DPL != 3 || gs[1].IST != 2 {
		t.Errorf("gates %+v", gs)
	}
}

func TestClosestSymbol(t *testing.T) {
	sym := func(name uint32, v, size uint64) []byte {
		b := make([]byte, elf64SymSize)
		binary.LittleEndian.PutUint32(b, name)
		binary.LittleEndian.PutUint64(b[8:], v)
		binary.LittleEndian.PutUint64(b[16:], size)
		return b
	}
	var raw []byte
	raw = append(raw, sym(1, 0x1000, 0x10)...)
	raw = append(raw, sym(2, 0x1008, 0)...) // closer but sizeless
	raw = append(raw, sym(0, 0x100c, 8)...) // unnamed
	raw = append(raw, sym(3, 0x2000, 8)...)
	if i, ok := closestSymbol(raw, 0x100c); !ok || i != 0 {
		t.Errorf("0x100c: %d %v, want the symbol that covers it", i, ok)
	}
	if i, ok := closestSymbol(raw, 0x1800); !ok || i != 1 {
		t.Errorf("0x1800: %d %v, want the closest below", i, ok)
	}
	if _, ok := closestSymbol(raw, 0x10); ok {
		t.Error("a symbol below all")
	}
}

// FuzzScanModules: any module-area bytes; candidates are inside the buffer, have
// valid names and states, and are never reported twice.
func FuzzScanModules(f *testing.F) {
	b := make([]byte, 1024)
	putModule(b, 0x80, 0xffffffffc0000080, "dmkit", true)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		const va = 0xffffffffc0000000
		seen := map[uint64]bool{}
		for _, c := range scanModules(b, va, testMod) {
			if c.VA < va || c.VA-va+testMod.size > uint64(len(b)) || c.State > 3 || c.Name == "" || seen[c.VA] {
				t.Fatalf("candidate %+v in %d bytes", c, len(b))
			}
			seen[c.VA] = true
		}
	})
}

// FuzzWalkXArray: any node contents; the walk ends, within its limit, with entries
// that are pointers (no internal entries or values), or an error.
func FuzzWalkXArray(f *testing.F) {
	m := &flatMem{base: xaBase, b: make([]byte, 8192)}
	root := m.node(xaBase, 6)
	leaf := m.node(xaBase+0x1000, 0)
	m.put64(xaBase+40, leaf)
	m.put64(xaBase+0x1000+48, 0xffff888000300000)
	f.Add(m.b, uint64(2))
	f.Add([]byte{}, uint64(2))
	f.Fuzz(func(t *testing.T, b []byte, headOff uint64) {
		mm := &flatMem{base: xaBase, b: b}
		n := 0
		_ = root
		err := walkXArray(mm, xaBase+headOff%8192, testXA, 1000, func(_, e uint64) error {
			if n++; n > 1000 || xaIsInternal(e) || xaIsValue(e) || e == 0 {
				t.Fatalf("entry %#x (%d entries)", e, n)
			}
			return nil
		})
		_ = err
	})
}

// FuzzParseIDT: any bytes give at most 256 gates whose fields fit their bit widths.
func FuzzParseIDT(f *testing.F) {
	f.Add(make([]byte, 4096))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		gs := parseIDT(raw)
		if len(gs) > idtEntries || len(gs) != min(len(raw)/idtGateSize, idtEntries) {
			t.Fatalf("%d gates from %d bytes", len(gs), len(raw))
		}
		for i, g := range gs {
			if g.Vector != i || g.IST > 7 || g.Type > 31 || g.DPL > 3 {
				t.Fatalf("gate %+v", g)
			}
		}
	})
}

func TestParseSystemMap(t *testing.T) {
	// Debian's placeholder, as linux-image-6.1.0-*-amd64 installs it.
	ph := "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n"
	syms, bad, err := ParseSystemMap(strings.NewReader(ph))
	if err != nil || len(syms) != 0 || bad != 1 {
		t.Errorf("placeholder: %d symbols, %d bad, %v", len(syms), bad, err)
	}
	syms, bad, err = ParseSystemMap(strings.NewReader("ffffffff81000000 T _text\n0000000000000000 D fixed_percpu_data\nnonsense\n"))
	if err != nil || len(syms) != 2 || bad != 1 || syms[0].Addr != 0xffffffff81000000 || syms[0].Type != 'T' || syms[1].Name != "fixed_percpu_data" {
		t.Errorf("%+v, %d bad, %v", syms, bad, err)
	}
}

// FuzzParseSystemMap: any file; symbols have names and one-letter types, and the
// parser never reads past its limit.
func FuzzParseSystemMap(f *testing.F) {
	f.Add([]byte("ffffffff81000000 T _text\nffffffff82000000 D x\n"))
	f.Add([]byte("ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		syms, _, err := ParseSystemMap(strings.NewReader(string(b)))
		if err != nil && syms != nil {
			t.Fatal("symbols with an error")
		}
		for _, s := range syms {
			if s.Name == "" || s.Type == 0 {
				t.Fatalf("symbol %+v", s)
			}
		}
	})
}

// FuzzPTWalk: any page tables; a walk of the module area ends, reports leaves inside
// the range in increasing order with page sizes the architecture has, aligned frames,
// and stops at its table limit.
func FuzzPTWalk(f *testing.F) {
	seed := make([]byte, 0x6000)
	binary.LittleEndian.PutUint64(seed[0xff8:], 0x2003)
	binary.LittleEndian.PutUint64(seed[0x2000+8*0x1ff:], 0x3003)
	binary.LittleEndian.PutUint64(seed[0x3000:], 0x4003)
	binary.LittleEndian.PutUint64(seed[0x3000+8:], 0x200083)
	binary.LittleEndian.PutUint64(seed[0x4000+8*3:], 0x5003)
	f.Add(seed, uint8(4))
	f.Add([]byte{}, uint8(5))
	f.Fuzz(func(t *testing.T, mem []byte, levels uint8) {
		w := newPTWalker(newPhys(&memSource{b: mem}), 4+int(levels&1), 64)
		const lo, hi = 0xffffffffc0000000, modulesEnd
		last := uint64(0)
		_ = w.walk(0, lo, hi, func(va, pa, size uint64) {
			if size != 4<<10 && size != 2<<20 && size != 1<<30 || va+size-1 < lo || va >= hi || va < last || pa&(size-1) != 0 {
				t.Fatalf("leaf %#x -> %#x size %#x after %#x", va, pa, size, last)
			}
			last = va
		})
		if w.Tables > 64 {
			t.Fatalf("%d tables read, limit 64", w.Tables)
		}
	})
}
