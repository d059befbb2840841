package linux

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Symbol is one entry of the kernel's kallsyms table.
type Symbol struct {
	Name string
	Type byte   // nm-style type letter, as /proc/kallsyms shows it
	Addr uint64 // runtime (KASLR-shifted) virtual address; absolute for per-CPU symbols
}

// Kallsyms is the kernel's symbol table, decoded from its compressed tables in guest
// memory as scripts/kallsyms.c emits them with CONFIG_KALLSYMS_BASE_RELATIVE:
// kallsyms_offsets, kallsyms_relative_base, kallsyms_num_syms, kallsyms_names,
// kallsyms_markers, (from 6.2, and Debian's 6.1) kallsyms_seqs_of_names,
// kallsyms_token_table and kallsyms_token_index, each 8-byte aligned. They are found
// by structure, not by symbol: the token index (256 increasing u16) and the token
// table before it, then num_syms and names checked against the markers.
type Kallsyms struct {
	Symbols      []Symbol // in table order (by address)
	RelativeBase uint64
	// Physical addresses of the tables, as found.
	TokenIndexPA, TokenTablePA, MarkersPA, NamesPA, NumSymsPA, OffsetsPA uint64
	byName                                                               map[string]int
	sorted                                                               []int // indices of kernel-address symbols by address (SymbolAt)
}

// Lookup returns the first symbol called name.
func (k *Kallsyms) Lookup(name string) (Symbol, bool) {
	if k.byName == nil {
		k.byName = make(map[string]int, len(k.Symbols))
		for i := len(k.Symbols) - 1; i >= 0; i-- {
			k.byName[k.Symbols[i].Name] = i
		}
	}
	i, ok := k.byName[name]
	if !ok {
		return Symbol{}, false
	}
	return k.Symbols[i], true
}

// Addr returns the address of symbol name, or an error that names it.
func (k *Kallsyms) Addr(name string) (uint64, error) {
	s, ok := k.Lookup(name)
	if !ok {
		return 0, fmt.Errorf("kernel symbol %s not in the guest's kallsyms", name)
	}
	return s.Addr, nil
}

// Limits on what a kallsyms table may claim.
const (
	maxSyms       = 1 << 21 // 2 M symbols (a distribution kernel has ~150 k)
	maxTokenTable = 1 << 14
	maxSymLen     = 1 << 10
	maxNamesBytes = 64 << 20
)

var errNoKallsyms = errors.New("no kallsyms tables found in guest memory")

// tokenIndexAt checks whether b (8-aligned in memory) starts a kallsyms_token_index:
// 256 little-endian u16 offsets, the first 0, strictly increasing by 2..maxToken.
func tokenIndexAt(b []byte) ([256]uint16, bool) {
	var idx [256]uint16
	if len(b) < 512 || b[0] != 0 || b[1] != 0 {
		return idx, false
	}
	for i := 1; i < 256; i++ {
		v := binary.LittleEndian.Uint16(b[2*i:])
		d := int(v) - int(idx[i-1])
		if d < 2 || d > 64 {
			return idx, false
		}
		idx[i] = v
	}
	return idx, int(idx[255]) < maxTokenTable
}

// findKallsyms scans guest-physical memory for kallsyms tables and decodes the first
// self-consistent set. scanned reports the candidates tried, for the error.
func findKallsyms(p *phys) (*Kallsyms, error) {
	const win = 4 << 20
	var firstErr error
	tried := 0
	for _, r := range p.ranges {
		buf := make([]byte, min(win+512, r.Size))
		for off := uint64(0); off < r.Size; off += win {
			n := min(uint64(len(buf)), r.Size-off)
			b := buf[:n]
			if err := p.readAll(r.GPA+off, b); err != nil {
				return nil, err
			}
			lim := min(uint64(win), n)
			for i := uint64(0); i+512 <= n && i < lim; i += 8 {
				if b[i] != 0 || b[i+1] != 0 || b[i+2] == 0 || b[i+3] != 0 {
					continue
				}
				idx, ok := tokenIndexAt(b[i:])
				if !ok {
					continue
				}
				tried++
				k, err := decodeKallsyms(p, r.GPA+off+i, idx)
				if err == nil {
					return k, nil
				}
				if firstErr == nil {
					firstErr = err
				}
			}
		}
	}
	if firstErr != nil {
		return nil, fmt.Errorf("%w (%d token-index candidates; first: %v)", errNoKallsyms, tried, firstErr)
	}
	return nil, errNoKallsyms
}

func align8(x uint64) uint64 { return (x + 7) &^ 7 }

// decodeKallsyms decodes the tables whose kallsyms_token_index is at tiPA, working
// backwards through the layout and checking each table against the next.
func decodeKallsyms(p *phys, tiPA uint64, idx [256]uint16) (*Kallsyms, error) {
	k := &Kallsyms{TokenIndexPA: tiPA}
	// kallsyms_token_table: 256 NUL-terminated tokens, ending (padded to 8) at tiPA.
	var tokens [256]string
	found := false
	for lastLen := uint64(1); lastLen <= 64 && !found; lastLen++ {
		size := uint64(idx[255]) + lastLen + 1
		if align8(size) > tiPA {
			break
		}
		tt := tiPA - align8(size)
		raw := make([]byte, size)
		if p.read(tt, raw) != nil {
			continue
		}
		ok := true
		for i := 0; i < 256 && ok; i++ {
			s := uint64(idx[i])
			e := size - 1
			if i < 255 {
				e = uint64(idx[i+1]) - 1
			}
			if raw[e] != 0 {
				ok = false
				break
			}
			for _, c := range raw[s:e] {
				if c == 0 || c >= 0x7f {
					ok = false
					break
				}
			}
			tokens[i] = string(raw[s:e])
		}
		if ok {
			k.TokenTablePA, found = tt, true
		}
	}
	if !found {
		return nil, fmt.Errorf("token index at %#x: no token table before it", tiPA)
	}
	// kallsyms_names starts 8 bytes after kallsyms_num_syms (a u32 in an 8-byte slot)
	// and ends before the token table. Between the names and the token table lie
	// kallsyms_markers and, from Linux 6.2 (and backports such as Debian's 6.1),
	// kallsyms_seqs_of_names (3 bytes per symbol). kallsyms_offsets and
	// kallsyms_relative_base come before kallsyms_num_syms (up to 6.6) or after
	// the token index (later kernels). Try each 8-aligned num_syms candidate going
	// backwards from the token table; the markers must match the decoded names.
	lo := uint64(0)
	if k.TokenTablePA > maxNamesBytes {
		lo = k.TokenTablePA - maxNamesBytes
	}
	var slot [16]byte
	for q := k.TokenTablePA - 16; q >= lo && q < k.TokenTablePA; q -= 8 {
		if err := p.read(q-8, slot[:]); err != nil {
			break // the start of a RAM range
		}
		n := uint64(binary.LittleEndian.Uint32(slot[8:]))
		if n < 2 || n > maxSyms || binary.LittleEndian.Uint32(slot[12:]) != 0 {
			continue
		}
		var offsPA, rbPA uint64
		if rb := binary.LittleEndian.Uint64(slot[:]); rb >= startKernelMap {
			rbPA, offsPA = q-8, q-8-align8(4*n)
		} else {
			offsPA = align8(tiPA + 512)
			rbPA = align8(offsPA + 4*n)
			if rb, err := p.u64(rbPA); err != nil || rb < startKernelMap {
				continue
			}
		}
		syms, ends, marks, err := decodeNames(p, q+8, k.TokenTablePA, n, &tokens)
		if err != nil {
			continue
		}
		nm := (n + 255) / 256
		mPA := align8(ends)
		if !markersAt(p, mPA, marks) {
			mPA = k.TokenTablePA - align8(4*nm)
			if !markersAt(p, mPA, marks) {
				continue
			}
		}
		k.NamesPA, k.NumSymsPA, k.MarkersPA, k.OffsetsPA = q+8, q, mPA, offsPA
		rb, err := p.u64(rbPA)
		if err != nil {
			return nil, fmt.Errorf("kallsyms_relative_base at %#x: %w", rbPA, err)
		}
		k.RelativeBase = rb
		offs := make([]byte, 4*n)
		if err := p.read(offsPA, offs); err != nil {
			return nil, fmt.Errorf("kallsyms_offsets at %#x: %w", offsPA, err)
		}
		// With CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86-64) non-negative offsets are absolute
		// and negative ones relative to relative_base-1; without it all are unsigned
		// offsets from relative_base. Most kernel symbols are negative in the first form.
		neg := 0
		for i := uint64(0); i < n; i++ {
			if int32(binary.LittleEndian.Uint32(offs[4*i:])) < 0 {
				neg++
			}
		}
		absPercpu := uint64(neg) > n/2
		for i := range syms {
			o := int32(binary.LittleEndian.Uint32(offs[4*i:]))
			switch {
			case !absPercpu:
				syms[i].Addr = rb + uint64(uint32(o))
			case o >= 0:
				syms[i].Addr = uint64(o)
			default:
				syms[i].Addr = rb - 1 - uint64(int64(o))
			}
		}
		k.Symbols = syms
		return k, nil
	}
	return nil, fmt.Errorf("token table at %#x: no kallsyms_num_syms/kallsyms_names/kallsyms_markers before it", k.TokenTablePA)
}

// markersAt says whether the u32 array at pa equals marks.
func markersAt(p *phys, pa uint64, marks []uint32) bool {
	b := make([]byte, 4*len(marks))
	if p.read(pa, b) != nil {
		return false
	}
	for i, m := range marks {
		if binary.LittleEndian.Uint32(b[4*i:]) != m {
			return false
		}
	}
	return true
}

// decodeNames expands n compressed names stored from names, not past limit. It returns
// the symbols, where the names end, and the offset of every 256th name (the markers).
func decodeNames(p *phys, names, limit, n uint64, tokens *[256]string) ([]Symbol, uint64, []uint32, error) {
	// Each name takes at least 2 bytes; cheap bound before reading.
	if names >= limit || (limit-names)/2 < n {
		return nil, 0, nil, fmt.Errorf("%d names cannot fit in %#x..%#x", n, names, limit)
	}
	raw := make([]byte, limit-names)
	if err := p.read(names, raw); err != nil {
		return nil, 0, nil, err
	}
	syms := make([]Symbol, 0, min(n, 1<<16))
	var marks []uint32
	off := uint64(0)
	var name []byte
	for i := uint64(0); i < n; i++ {
		if i%256 == 0 {
			marks = append(marks, uint32(off))
		}
		if off >= uint64(len(raw)) {
			return nil, 0, nil, fmt.Errorf("symbol %d: names run past %#x", i, limit)
		}
		l := uint64(raw[off])
		off++
		if l&0x80 != 0 { // "big symbol" two-byte length (Linux 6.1+)
			if off >= uint64(len(raw)) {
				return nil, 0, nil, fmt.Errorf("symbol %d: names run past %#x", i, limit)
			}
			l = l&0x7f | uint64(raw[off])<<7
			off++
		}
		if l == 0 || l > maxSymLen || off+l > uint64(len(raw)) {
			return nil, 0, nil, fmt.Errorf("symbol %d at names+%#x: bad length %d", i, off, l)
		}
		name = name[:0]
		for _, t := range raw[off : off+l] {
			name = append(name, tokens[t]...)
		}
		off += l
		if len(name) < 2 {
			return nil, 0, nil, fmt.Errorf("symbol %d: name %q too short", i, name)
		}
		syms = append(syms, Symbol{Type: name[0], Name: string(name[1:])})
	}
	return syms, names + off, marks, nil
}
