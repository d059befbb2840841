// Package elfcore parses the program headers of ELF core files such as those written by
// QEMU's dump-guest-memory (and virsh dump --memory-only), where each PT_LOAD segment
// holds a run of guest-physical memory at p_paddr.
//
// # Security
//
// Dumps are produced from attacker-controlled guests and may be truncated or corrupt.
// Parse reads only the ELF header, the program header table and (for PN_XNUM) the first
// section header; every count, offset and length is checked against the file size, for
// overflow and against fixed limits before use, so memory use is bounded regardless of
// input. Errors are *FormatError values carrying the byte offset of the bad field.
package elfcore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Program header types and other constants from the ELF specification.
const (
	PT_LOAD = 1
	PT_NOTE = 4

	etCore  = 4
	pnXNum  = 0xffff
	class32 = 1
	class64 = 2
)

// MaxSegments bounds the number of program headers Parse accepts. QEMU writes one
// PT_LOAD per contiguous guest-physical block plus one PT_NOTE, i.e. tens.
const MaxSegments = 1 << 16

// ErrFormat is matched (errors.Is) by every *FormatError.
var ErrFormat = errors.New("malformed ELF core")

// FormatError reports a malformed or truncated core at byte offset Off.
type FormatError struct {
	Off int64  // byte offset in the file of the offending field or structure
	Msg string // what is wrong
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("elf core: %s (at byte offset %#x)", e.Msg, e.Off)
}

// Is reports whether target is ErrFormat.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

func formatErr(off int64, format string, args ...any) error {
	return &FormatError{Off: off, Msg: fmt.Sprintf(format, args...)}
}

// Segment is one program header.
type Segment struct {
	Type     uint32
	Flags    uint32
	Offset   uint64 // file offset of the segment's bytes
	VAddr    uint64
	PAddr    uint64 // guest-physical address for QEMU dumps
	FileSize uint64 // bytes present in the file
	MemSize  uint64 // bytes in memory; the part past FileSize reads as zero
	Align    uint64
}

// Core is what Parse learned about a core file.
type Core struct {
	Class   int // 32 or 64
	Order   binary.ByteOrder
	Machine uint16
	Loads   []Segment // PT_LOAD segments with FileSize > 0 or MemSize > 0, in file order
	Notes   []Segment // PT_NOTE segments
}

// Parse reads the ELF header and program headers of a core file of size bytes from r
// and validates every PT_LOAD and PT_NOTE segment: its file bytes lie inside the file,
// FileSize <= MemSize, physical ranges neither wrap nor overlap.
func Parse(r io.ReaderAt, size int64) (*Core, error) {
	var ident [16]byte
	if err := readAt(r, size, ident[:], 0, "ELF identification"); err != nil {
		return nil, err
	}
	if string(ident[:8]) == "KDUMP   " {
		return nil, formatErr(0, "kdump-compressed dump, not ELF (take the dump in the default ELF format)")
	}
	if string(ident[:4]) != "\x7fELF" {
		return nil, formatErr(0, "not an ELF file (bad magic %q)", ident[:4])
	}
	c := &Core{}
	switch ident[4] {
	case class32:
		c.Class = 32
	case class64:
		c.Class = 64
	default:
		return nil, formatErr(4, "unknown ELF class %d", ident[4])
	}
	switch ident[5] {
	case 1:
		c.Order = binary.LittleEndian
	case 2:
		c.Order = binary.BigEndian
	default:
		return nil, formatErr(5, "unknown ELF data encoding %d", ident[5])
	}
	if ident[6] != 1 {
		return nil, formatErr(6, "unknown ELF version %d", ident[6])
	}
	h, err := c.readHeader(r, size)
	if err != nil {
		return nil, err
	}
	if err := c.readPhdrs(r, size, h); err != nil {
		return nil, err
	}
	return c, nil
}

// header holds the ELF header fields Parse needs.
type header struct {
	phoff, shoff        uint64
	phentsize, phnum    uint16
	shentsize, shnum    uint16
	phnumOff, phentsOff int64
}

func (c *Core) readHeader(r io.ReaderAt, size int64) (header, error) {
	var h header
	n := 52
	if c.Class == 64 {
		n = 64
	}
	b := make([]byte, n)
	if err := readAt(r, size, b, 0, "ELF header"); err != nil {
		return h, err
	}
	o := c.Order
	if t := o.Uint16(b[16:]); t != etCore {
		return h, formatErr(16, "ELF type %d is not a core file (ET_CORE = 4)", t)
	}
	c.Machine = o.Uint16(b[18:])
	if c.Class == 64 {
		h.phoff, h.shoff = o.Uint64(b[32:]), o.Uint64(b[40:])
		h.phentsize, h.phnum = o.Uint16(b[54:]), o.Uint16(b[56:])
		h.shentsize, h.shnum = o.Uint16(b[58:]), o.Uint16(b[60:])
		h.phentsOff, h.phnumOff = 54, 56
	} else {
		h.phoff, h.shoff = uint64(o.Uint32(b[28:])), uint64(o.Uint32(b[32:]))
		h.phentsize, h.phnum = o.Uint16(b[42:]), o.Uint16(b[44:])
		h.shentsize, h.shnum = o.Uint16(b[46:]), o.Uint16(b[48:])
		h.phentsOff, h.phnumOff = 42, 44
	}
	return h, nil
}

func (c *Core) phdrSize() int {
	if c.Class == 64 {
		return 56
	}
	return 32
}

func (c *Core) readPhdrs(r io.ReaderAt, size int64, h header) error {
	if int(h.phentsize) != c.phdrSize() {
		return formatErr(h.phentsOff, "program header size %d, want %d for ELF%d", h.phentsize, c.phdrSize(), c.Class)
	}
	count := uint64(h.phnum)
	if h.phnum == pnXNum {
		n, err := c.xnum(r, size, h)
		if err != nil {
			return err
		}
		count = n
	}
	if count == 0 {
		return formatErr(h.phnumOff, "no program headers")
	}
	if count > MaxSegments {
		return formatErr(h.phnumOff, "%d program headers, more than the limit of %d", count, MaxSegments)
	}
	tableLen := count * uint64(h.phentsize) // cannot overflow: both bounded above
	if h.phoff > uint64(size) || tableLen > uint64(size)-h.phoff {
		return formatErr(int64(min(h.phoff, uint64(size))), "program header table [%#x, +%#x) runs past the end of the %#x-byte file (truncated?)", h.phoff, tableLen, size)
	}
	table := make([]byte, tableLen)
	if err := readAt(r, size, table, int64(h.phoff), "program header table"); err != nil {
		return err
	}
	for i := uint64(0); i < count; i++ {
		off := int64(h.phoff + i*uint64(h.phentsize))
		s := c.decodePhdr(table[i*uint64(h.phentsize):])
		if s.Type != PT_LOAD && s.Type != PT_NOTE {
			continue
		}
		if err := checkSegment(s, i, off, size); err != nil {
			return err
		}
		if s.Type == PT_NOTE {
			c.Notes = append(c.Notes, s)
		} else if s.MemSize > 0 {
			c.Loads = append(c.Loads, s)
		}
	}
	return checkOverlap(c.Loads, h.phoff, uint64(h.phentsize))
}

// xnum reads the real program header count from section header 0 (PN_XNUM).
func (c *Core) xnum(r io.ReaderAt, size int64, h header) (uint64, error) {
	shsize, infoOff := 40, 28
	if c.Class == 64 {
		shsize, infoOff = 64, 44
	}
	if h.shoff == 0 || int(h.shentsize) != shsize {
		return 0, formatErr(h.phnumOff, "PN_XNUM program header count without a usable section header 0 (shoff %#x, shentsize %d)", h.shoff, h.shentsize)
	}
	if h.shoff > uint64(size) || uint64(shsize) > uint64(size)-h.shoff {
		return 0, formatErr(int64(min(h.shoff, uint64(size))), "section header 0 at %#x runs past the end of the %#x-byte file (truncated?)", h.shoff, size)
	}
	b := make([]byte, shsize)
	if err := readAt(r, size, b, int64(h.shoff), "section header 0"); err != nil {
		return 0, err
	}
	return uint64(c.Order.Uint32(b[infoOff:])), nil
}

func (c *Core) decodePhdr(b []byte) Segment {
	o := c.Order
	if c.Class == 64 {
		return Segment{
			Type: o.Uint32(b[0:]), Flags: o.Uint32(b[4:]), Offset: o.Uint64(b[8:]),
			VAddr: o.Uint64(b[16:]), PAddr: o.Uint64(b[24:]), FileSize: o.Uint64(b[32:]),
			MemSize: o.Uint64(b[40:]), Align: o.Uint64(b[48:]),
		}
	}
	return Segment{
		Type: o.Uint32(b[0:]), Offset: uint64(o.Uint32(b[4:])), VAddr: uint64(o.Uint32(b[8:])),
		PAddr: uint64(o.Uint32(b[12:])), FileSize: uint64(o.Uint32(b[16:])),
		MemSize: uint64(o.Uint32(b[20:])), Flags: o.Uint32(b[24:]), Align: uint64(o.Uint32(b[28:])),
	}
}

// checkSegment validates program header i, found at file offset off.
func checkSegment(s Segment, i uint64, off, size int64) error {
	if s.FileSize > s.MemSize {
		return formatErr(off, "segment %d: file size %#x exceeds memory size %#x", i, s.FileSize, s.MemSize)
	}
	if s.Offset > uint64(size) || s.FileSize > uint64(size)-s.Offset {
		return formatErr(off, "segment %d: data [%#x, +%#x) runs past the end of the %#x-byte file (truncated dump?)", i, s.Offset, s.FileSize, size)
	}
	if s.PAddr+s.MemSize < s.PAddr {
		return formatErr(off, "segment %d: physical range %#x+%#x wraps the address space", i, s.PAddr, s.MemSize)
	}
	return nil
}

// checkOverlap rejects PT_LOAD segments whose physical ranges overlap.
func checkOverlap(loads []Segment, phoff, phentsize uint64) error {
	idx := make([]int, len(loads))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return loads[idx[a]].PAddr < loads[idx[b]].PAddr })
	for k := 1; k < len(idx); k++ {
		p, q := loads[idx[k-1]], loads[idx[k]]
		if q.PAddr < p.PAddr+p.MemSize {
			return formatErr(int64(phoff), "PT_LOAD segments at physical %#x+%#x and %#x+%#x overlap (a dump taken with paging on? take it with paging=false)", p.PAddr, p.MemSize, q.PAddr, q.MemSize)
		}
	}
	return nil
}

// readAt fills b from r at off or reports where the file ends.
func readAt(r io.ReaderAt, size int64, b []byte, off int64, what string) error {
	if off < 0 || off > size || int64(len(b)) > size-off {
		return formatErr(min(max(off, 0), size), "%s needs %d bytes at %#x but the file has %#x bytes (truncated?)", what, len(b), off, size)
	}
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("elf core: reading %s at %#x: %w", what, off, err)
}
