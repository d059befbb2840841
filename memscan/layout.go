package memscan

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/domainm/domainm/internal/units"
)

// Extent maps Size bytes of a backing file, starting at file offset Offset, onto
// guest-physical addresses starting at GPA.
type Extent struct {
	GPA    uint64
	Size   uint64
	Offset uint64
}

func (e Extent) String() string {
	return fmt.Sprintf("%#x+%#x@%#x", e.GPA, e.Size, e.Offset)
}

// Layout says how the offsets of a RAM file map to guest-physical addresses.
//
// QEMU's x86 machines place guest RAM below the PCI hole up to a low-memory limit and
// the rest at 4 GiB. A memory-backend-file holds the RAM contiguously, so file offsets
// at or above the limit appear in the guest at 4 GiB + (offset - limit). The forms:
//
//	flat              offset = GPA (default; raw dumps and guests below the limit)
//	q35               QEMU 7.2 q35: RAM >= 0xb0000000 is split at 2 GiB
//	pc                QEMU 7.2 pc (i440fx): RAM >= 0xe0000000 is split at 3 GiB
//	split:LOWMEM      split at LOWMEM (e.g. when -machine max-ram-below-4g was set)
//	ranges:GPA+SIZE@OFF,...  explicit extents
//
// Numbers are sizes as everywhere in Domain M (internal/units: "3GiB" or "3G" powers of
// 1024, "3GB" of 1000, bare bytes) or "0x..." hex bytes.
// The zero Layout is flat. Layout implements flag.Value.
type Layout struct {
	kind    string // "flat", "q35", "pc", "split", "ranges"
	lowmem  uint64
	extents []Extent
}

// Machine-type rules from QEMU 7.2 hw/i386/pc_q35.c and pc_piix.c (gigabyte_align).
const (
	q35SplitAt = 0xb0000000
	q35Lowmem  = 0x80000000
	pcSplitAt  = 0xe0000000
	pcLowmem   = 0xc0000000
	highBase   = 1 << 32
)

// ParseLayout parses a --layout value; see Layout.
func ParseLayout(s string) (Layout, error) {
	var l Layout
	err := l.Set(s)
	return l, err
}

// Set parses s into l (flag.Value).
func (l *Layout) Set(s string) error {
	kind, arg, hasArg := strings.Cut(strings.TrimSpace(s), ":")
	switch kind {
	case "", "flat", "q35", "pc":
		if hasArg {
			return fmt.Errorf("layout %q: %s takes no argument", s, kind)
		}
		if kind == "" {
			kind = "flat"
		}
		*l = Layout{kind: kind}
	case "i440fx":
		if hasArg {
			return fmt.Errorf("layout %q: i440fx takes no argument", s)
		}
		*l = Layout{kind: "pc"}
	case "split":
		low, err := parseSize(arg)
		if err != nil {
			return fmt.Errorf("layout %q: low-memory limit: %w", s, err)
		}
		if low == 0 || low > highBase {
			return fmt.Errorf("layout %q: low-memory limit must be in (0, 4 GiB]", s)
		}
		*l = Layout{kind: "split", lowmem: low}
	case "ranges":
		ext, err := parseExtents(arg)
		if err != nil {
			return fmt.Errorf("layout %q: %w", s, err)
		}
		*l = Layout{kind: "ranges", extents: ext}
	default:
		return fmt.Errorf("layout %q: unknown (want flat, q35, pc, split:LOWMEM or ranges:GPA+SIZE@OFF,...)", s)
	}
	return nil
}

// String returns the layout in the form Set accepts.
func (l Layout) String() string {
	switch l.kind {
	case "", "flat":
		return "flat"
	case "split":
		return fmt.Sprintf("split:%#x", l.lowmem)
	case "ranges":
		parts := make([]string, len(l.extents))
		for i, e := range l.extents {
			parts[i] = e.String()
		}
		return "ranges:" + strings.Join(parts, ",")
	}
	return l.kind
}

// Extents returns where the bytes of a backing file of fileSize bytes appear in
// guest-physical memory, sorted by GPA. Every extent lies inside the file.
func (l Layout) Extents(fileSize uint64) ([]Extent, error) {
	if fileSize == 0 {
		return nil, fmt.Errorf("layout %s: empty backing file", l)
	}
	var ext []Extent
	switch l.kind {
	case "", "flat":
		ext = []Extent{{GPA: 0, Size: fileSize}}
	case "q35":
		ext = splitAt(fileSize, lowmemFor(fileSize, q35SplitAt, q35Lowmem))
	case "pc":
		ext = splitAt(fileSize, lowmemFor(fileSize, pcSplitAt, pcLowmem))
	case "split":
		ext = splitAt(fileSize, l.lowmem)
	case "ranges":
		ext = append([]Extent(nil), l.extents...)
	default:
		return nil, fmt.Errorf("layout %q: unknown kind", l.kind)
	}
	return checkExtents(ext, fileSize)
}

// lowmemFor applies QEMU's rule: RAM of at least splitAt bytes keeps lowmem bytes below
// 4 GiB; smaller RAM stays in one piece.
func lowmemFor(ram, splitAt, lowmem uint64) uint64 {
	if ram >= splitAt {
		return lowmem
	}
	return ram
}

func splitAt(size, lowmem uint64) []Extent {
	if size <= lowmem {
		return []Extent{{GPA: 0, Size: size}}
	}
	return []Extent{
		{GPA: 0, Size: lowmem, Offset: 0},
		{GPA: highBase, Size: size - lowmem, Offset: lowmem},
	}
}

// checkExtents rejects extents that wrap, leave the file or overlap in GPA, and
// returns them sorted by GPA.
func checkExtents(ext []Extent, fileSize uint64) ([]Extent, error) {
	rs := make([]Range, 0, len(ext))
	byGPA := make(map[uint64]Extent, len(ext))
	for _, e := range ext {
		if e.Size == 0 {
			continue
		}
		if e.Offset+e.Size < e.Offset || e.Offset+e.Size > fileSize {
			return nil, fmt.Errorf("extent %v lies outside the %#x-byte backing file", e, fileSize)
		}
		rs = append(rs, Range{GPA: e.GPA, Size: e.Size})
		byGPA[e.GPA] = e
	}
	rs, err := normalize(rs)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("layout maps no bytes of the backing file")
	}
	out := make([]Extent, len(rs))
	for i, r := range rs {
		out[i] = byGPA[r.GPA]
	}
	return out, nil
}

func parseExtents(s string) ([]Extent, error) {
	if s == "" {
		return nil, fmt.Errorf("no ranges given")
	}
	var out []Extent
	for _, part := range strings.Split(s, ",") {
		gs, rest, ok1 := strings.Cut(part, "+")
		ss, offs, ok2 := strings.Cut(rest, "@")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("range %q: want GPA+SIZE@OFFSET", part)
		}
		var e Extent
		var err error
		if e.GPA, err = parseSize(gs); err != nil {
			return nil, fmt.Errorf("range %q: address: %w", part, err)
		}
		if e.Size, err = parseSize(ss); err != nil {
			return nil, fmt.Errorf("range %q: size: %w", part, err)
		}
		if e.Offset, err = parseSize(offs); err != nil {
			return nil, fmt.Errorf("range %q: offset: %w", part, err)
		}
		if e.Size == 0 {
			return nil, fmt.Errorf("range %q: size is zero", part)
		}
		out = append(out, e)
	}
	return out, nil
}

// parseSize parses a size or an address as every size in Domain M reads
// (internal/units: bytes, or a unit, IEC "1GiB"/"1G" or SI "1GB"), or as "0x..." hex
// bytes, the form guest-physical addresses take everywhere (no unit after hex digits).
func parseSize(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		v, err := strconv.ParseUint(h, 16, 64)
		if err != nil {
			return 0, fmt.Errorf("bad hex number %q (a hex size takes no unit)", s)
		}
		return v, nil
	}
	v, err := units.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%w, or \"0x...\" hex", err)
	}
	return uint64(v), nil
}
