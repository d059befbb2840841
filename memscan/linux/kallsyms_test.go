package linux

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// buildKallsyms lays out kallsyms tables for syms (relative to base, absolute-percpu
// encoding) as scripts/kallsyms.c does, in the Linux 6.1 order (offsets, relative_base,
// num_syms, names, markers, token table, token index) or, with seqs, Debian 6.1's and
// Linux 6.2's (markers followed by kallsyms_seqs_of_names). Tokens are single
// characters, so every name is stored uncompressed. It returns the blob, to be placed at
// an 8-aligned address.
func buildKallsyms(syms []Symbol, base uint64, seqs bool) []byte {
	var b []byte
	pad := func() {
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
	}
	for _, s := range syms {
		b = binary.LittleEndian.AppendUint32(b, uint32(int32(-int64(s.Addr-base)-1)))
	}
	pad()
	b = binary.LittleEndian.AppendUint64(b, base)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(syms)))
	pad()
	var marks []uint32
	names := len(b)
	for i, s := range syms {
		if i%256 == 0 {
			marks = append(marks, uint32(len(b)-names))
		}
		full := string(s.Type) + s.Name
		b = append(b, byte(len(full)))
		b = append(b, full...)
	}
	pad()
	for _, m := range marks {
		b = binary.LittleEndian.AppendUint32(b, m)
	}
	pad()
	if seqs {
		b = append(b, make([]byte, 3*len(syms))...)
		pad()
	}
	tt := len(b)
	var idx []uint16
	for i := 0; i < 256; i++ {
		idx = append(idx, uint16(len(b)-tt))
		if i >= 0x21 && i < 0x7f {
			b = append(b, byte(i), 0)
		} else {
			b = append(b, fmt.Sprintf("~%02x", i)...)
			b = append(b, 0)
		}
	}
	pad()
	for _, v := range idx {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	pad()
	return b
}

func testSyms(n int) []Symbol {
	var s []Symbol
	for i := range n {
		s = append(s, Symbol{Name: fmt.Sprintf("sym_%d", i), Type: "Ttd"[i%3], Addr: 0xffffffff81000000 + uint64(i)*16})
	}
	return s
}

func TestKallsymsSynthetic(t *testing.T) {
	for _, seqs := range []bool{false, true} {
		syms := testSyms(700)
		blob := buildKallsyms(syms, 0xffffffff81000000, seqs)
		m := &memSource{base: 0x100000, b: make([]byte, 1<<20+len(blob)+4096)}
		copy(m.b[1<<20:], blob)
		k, err := findKallsyms(newPhys(m))
		if err != nil {
			t.Fatalf("seqs %v: %v", seqs, err)
		}
		if len(k.Symbols) != len(syms) {
			t.Fatalf("seqs %v: %d symbols, want %d", seqs, len(k.Symbols), len(syms))
		}
		for i := range syms {
			if k.Symbols[i] != syms[i] {
				t.Fatalf("seqs %v: symbol %d = %+v, want %+v", seqs, i, k.Symbols[i], syms[i])
			}
		}
		if a, err := k.Addr("sym_5"); err != nil || a != syms[5].Addr {
			t.Errorf("Addr(sym_5) = %#x, %v", a, err)
		}
		if _, err := k.Addr("missing"); err == nil {
			t.Errorf("missing symbol found")
		}
	}
}

// FuzzKallsyms: hostile bytes around and inside kallsyms tables never panic the finder
// and never yield symbols from tables that do not decode.
func FuzzKallsyms(f *testing.F) {
	f.Add(buildKallsyms(testSyms(300), 0xffffffff81000000, false))
	f.Add(buildKallsyms(testSyms(3), 0xffffffff81000000, true))
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, blob []byte) {
		if len(blob) > 1<<20 {
			return
		}
		m := &memSource{base: 0x1000, b: append(make([]byte, 64), blob...)}
		k, err := findKallsyms(newPhys(m))
		if err == nil && len(k.Symbols) == 0 {
			t.Fatal("no error and no symbols")
		}
	})
}
