package linux

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/domainm/domainm/memscan"
)

// memSource is guest-physical memory in a byte slice at GPA base.
type memSource struct {
	base uint64
	b    []byte
}

func (m *memSource) Ranges() []memscan.Range {
	return []memscan.Range{{GPA: m.base, Size: uint64(len(m.b))}}
}

func (m *memSource) ReadAt(p []byte, gpa int64) (int, error) {
	off := uint64(gpa) - m.base
	if uint64(gpa) < m.base || off > uint64(len(m.b)) || uint64(len(p)) > uint64(len(m.b))-off {
		return 0, memscan.ErrOutOfRange
	}
	return copy(p, m.b[off:]), nil
}

func (m *memSource) Close() error { return nil }

func (m *memSource) put64(pa, v uint64) { binary.LittleEndian.PutUint64(m.b[pa-m.base:], v) }

var _ io.Closer = (*memSource)(nil)

func TestTranslateSynthetic(t *testing.T) {
	m := &memSource{b: make([]byte, 64<<20)}
	p := newPhys(m)
	const (
		pml5, pml4, pdpt, pd, pt = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000
		va4k                     = 0xffffffff81234567
		va2m                     = 0xffff888000345678
		va1g                     = 0xffffc90012345678
	)
	idx := func(va uint64, level int) uint64 { return (va >> (12 + 9*(level-1))) & 0x1ff }
	// 4 KiB: pml4 -> pdpt -> pd -> pt -> 0x800000
	m.put64(pml4+8*idx(va4k, 4), pdpt|3)
	m.put64(pdpt+8*idx(va4k, 3), pd|3)
	m.put64(pd+8*idx(va4k, 2), pt|3)
	m.put64(pt+8*idx(va4k, 1), 0x800000|3|1<<63)
	// 2 MiB page at 0x1200000
	m.put64(pml4+8*idx(va2m, 4), 0x6000|3)
	m.put64(0x6000+8*idx(va2m, 3), 0x7000|3)
	m.put64(0x7000+8*idx(va2m, 2), 0x1200000|0x83)
	// 1 GiB page at 0x40000000 (outside RAM: translation works, reading does not)
	m.put64(pml4+8*idx(va1g, 4), 0x8000|3)
	m.put64(0x8000+8*idx(va1g, 3), 0x40000000|0x83)
	// a table pointer outside RAM
	const vaBad = 0xffffc90080000000
	m.put64(0x8000+8*idx(vaBad, 3), 0x7fff0000|3)
	m.put64(pml5+8*idx(va4k, 5), pml4|3)

	as := &AddressSpace{p: p, Root: pml4, Levels: 4}
	for _, c := range []struct{ va, pa, size uint64 }{
		{va4k, 0x800567, 4 << 10}, {va2m, 0x1200000 | 0x145678, 2 << 20}, {va1g, 0x40000000 | 0x12345678, 1 << 30},
	} {
		got, err := as.Translate(c.va)
		if err != nil || got.PA != c.pa || got.PageSize != c.size {
			t.Errorf("Translate(%#x) = %+v, %v; want %#x, %d", c.va, got, err, c.pa, c.size)
		}
	}
	if _, err := as.Translate(0xffff900000000000); !errors.Is(err, ErrNotMapped) {
		t.Errorf("unmapped: %v", err)
	}
	if _, err := as.Translate(0x0000900000000000 | 1<<47); err == nil {
		t.Errorf("non-canonical translated")
	}
	if _, err := as.Translate(vaBad); err == nil || errors.Is(err, ErrNotMapped) {
		t.Errorf("table outside RAM: %v", err)
	} else {
		t.Log(err)
	}
	if err := as.Read(va1g, make([]byte, 8)); err == nil {
		t.Errorf("read of a page outside RAM succeeded")
	}
	as5 := &AddressSpace{p: p, Root: pml5, Levels: 5}
	// In 5-level mode va4k's sign extension goes to bit 56; it is still canonical.
	if got, err := as5.Translate(va4k | 0xff00000000000000); err != nil || got.PA != 0x800567 {
		t.Errorf("5-level Translate = %+v, %v", got, err)
	}
}

// FuzzTranslate: any page-table contents; translation never panics, never reads
// outside RAM and returns a page size it knows.
func FuzzTranslate(f *testing.F) {
	seed := make([]byte, 0x6000)
	binary.LittleEndian.PutUint64(seed[0xff8:], 0x2003)
	binary.LittleEndian.PutUint64(seed[0x2000+8*0x1fe:], 0x3003)
	binary.LittleEndian.PutUint64(seed[0x3000+8*8:], 0x4083)
	binary.LittleEndian.PutUint64(seed[0x3000+8*9:], 0x4003)
	binary.LittleEndian.PutUint64(seed[0x4000:], 0x5003)
	f.Add(seed, uint64(0xffffffff81000000), uint8(4))
	f.Add(seed, uint64(0xffffffff81200000), uint8(5))
	f.Add([]byte{}, uint64(0), uint8(4))
	f.Fuzz(func(t *testing.T, mem []byte, va uint64, levels uint8) {
		as := &AddressSpace{p: newPhys(&memSource{b: mem}), Root: 0, Levels: 4 + int(levels&1)}
		m, err := as.Translate(va)
		if err == nil && m.PageSize != 4<<10 && m.PageSize != 2<<20 && m.PageSize != 1<<30 {
			t.Fatalf("page size %d", m.PageSize)
		}
		_ = as.Read(va, make([]byte, 100))
	})
}
