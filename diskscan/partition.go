package diskscan

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Partition is one partition of a disk, in bytes from the start of the disk.
type Partition struct {
	Index  int    // 1-based as Linux numbers them (MBR logical partitions start at 5)
	Scheme string // "mbr", "gpt" or "none" (a bare filesystem: one partition = whole disk)
	Start  int64
	Size   int64
	Type   string // MBR: "0x83"; GPT: type GUID in canonical form
	Name   string // GPT partition name
}

const (
	sector        = 512
	maxLogical    = 128
	mbrTypeGPT    = 0xEE
	gptEntriesMax = 1 << 20 // bytes of GPT partition entry array
)

// Partitions reads the partition table of a disk of the given size: MBR including
// extended/logical partitions, GPT (behind a protective MBR), or, without a table, one
// "none" partition covering the whole disk. Partitions are clipped to the disk.
func Partitions(r io.ReaderAt, size int64) (_ []Partition, err error) {
	defer recoverCorrupt(&err, "partition table")
	if size <= 0 {
		return nil, corruptf("disk", 0, "empty (%d bytes)", size)
	}
	if size < sector {
		return []Partition{{Index: 1, Scheme: "none", Start: 0, Size: size}}, nil
	}
	mbr := make([]byte, sector)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return nil, fmt.Errorf("reading MBR: %w", err)
	}
	ents, ok := mbrEntries(mbr)
	if !ok {
		return []Partition{{Index: 1, Scheme: "none", Start: 0, Size: size}}, nil
	}
	for _, e := range ents {
		if e.typ == mbrTypeGPT {
			return gptPartitions(r, size)
		}
	}
	out := []Partition{} // a table without usable entries is an empty list, not nil
	for i, e := range ents {
		if e.count == 0 || e.typ == 0 {
			continue
		}
		if isExtended(e.typ) {
			logical, err := ebrChain(r, size, e.start)
			if err != nil {
				return nil, err
			}
			out = append(out, logical...)
			continue
		}
		if p, ok := clip(Partition{Index: i + 1, Scheme: "mbr", Start: int64(e.start) * sector,
			Size: int64(e.count) * sector, Type: fmt.Sprintf("0x%02x", e.typ)}, size); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

type mbrEntry struct {
	status, typ  uint8
	start, count uint32
}

// mbrEntries parses the four primary entries. ok is false when sector 0 is not an MBR
// (no 0x55AA signature, or an entry with an invalid status byte).
func mbrEntries(b []byte) ([4]mbrEntry, bool) {
	var out [4]mbrEntry
	if b[510] != 0x55 || b[511] != 0xAA {
		return out, false
	}
	any := false
	for i := range out {
		e := b[446+16*i:]
		out[i] = mbrEntry{status: e[0], typ: e[4],
			start: binary.LittleEndian.Uint32(e[8:]), count: binary.LittleEndian.Uint32(e[12:])}
		if out[i].status != 0 && out[i].status != 0x80 {
			return out, false
		}
		any = any || (out[i].typ != 0 && out[i].count != 0)
	}
	return out, any
}

func isExtended(t uint8) bool { return t == 0x05 || t == 0x0F || t == 0x85 }

// ebrChain follows the linked list of extended boot records. Each EBR's first entry is a
// logical partition relative to that EBR; its second points to the next EBR relative to
// the extended partition's start. Like Linux, it ends the chain at an EBR without a
// signature, outside the disk or already visited, keeping the partitions found before.
func ebrChain(r io.ReaderAt, size int64, extStart uint32) ([]Partition, error) {
	var out []Partition
	seen := map[uint32]bool{}
	b := make([]byte, sector)
	le := binary.LittleEndian
	for cur := extStart; !seen[cur] && len(seen) < maxLogical && int64(cur)*sector+sector <= size; {
		seen[cur] = true
		if _, err := r.ReadAt(b, int64(cur)*sector); err != nil {
			return out, fmt.Errorf("reading EBR at sector %d: %w", cur, err)
		}
		if b[510] != 0x55 || b[511] != 0xAA {
			break
		}
		typ, start, count := b[446+4], le.Uint32(b[446+8:]), le.Uint32(b[446+12:])
		if typ != 0 && count != 0 {
			p := Partition{Index: 5 + len(out), Scheme: "mbr", Start: (int64(cur) + int64(start)) * sector,
				Size: int64(count) * sector, Type: fmt.Sprintf("0x%02x", typ)}
			if p, ok := clip(p, size); ok {
				out = append(out, p)
			}
		}
		next := b[446+16:]
		n := uint64(extStart) + uint64(le.Uint32(next[8:]))
		if next[4] == 0 || le.Uint32(next[8:]) == 0 || n > 1<<32-1 {
			break
		}
		cur = uint32(n)
	}
	return out, nil
}

// clip limits p to the disk; ok is false when nothing of it is on the disk.
func clip(p Partition, size int64) (Partition, bool) {
	if p.Start <= 0 || p.Start >= size || p.Size <= 0 {
		return p, false
	}
	p.Size = min(p.Size, size-p.Start)
	return p, true
}
