package diskscan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"
)

// gptPartitions reads the primary GPT header (LBA 1, 512-byte then 4096-byte sectors),
// falling back to the backup header at the last LBA when the primary fails its checks.
func gptPartitions(r io.ReaderAt, size int64) ([]Partition, error) {
	var errs []error
	for _, ss := range []int64{512, 4096} {
		for _, lba := range []int64{1, size/ss - 1} {
			parts, err := gptAt(r, size, ss, lba)
			if err == nil {
				return parts, nil
			}
			errs = append(errs, err)
		}
	}
	return nil, fmt.Errorf("no valid GPT header: %w", errors.Join(errs...))
}

func gptAt(r io.ReaderAt, size, ss, lba int64) ([]Partition, error) {
	if lba < 1 || (lba+1)*ss > size {
		return nil, corruptf("GPT protective MBR", 0, "GPT header LBA %d (%d-byte sectors) beyond disk", lba, ss)
	}
	h := make([]byte, 92)
	if _, err := r.ReadAt(h, lba*ss); err != nil {
		return nil, fmt.Errorf("reading GPT header at %#x: %w", lba*ss, err)
	}
	le := binary.LittleEndian
	if string(h[:8]) != "EFI PART" {
		return nil, corruptf("GPT header", lba*ss, "no signature")
	}
	hsize := le.Uint32(h[12:])
	if hsize != 92 { // larger headers exist in theory; none are made in practice
		return nil, corruptf("GPT header", lba*ss+12, "size %d", hsize)
	}
	crc := le.Uint32(h[16:])
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != crc {
		return nil, corruptf("GPT header", lba*ss+16, "CRC mismatch")
	}
	entLBA, n, esz := int64(le.Uint64(h[72:])), int64(le.Uint32(h[80:])), int64(le.Uint32(h[84:]))
	if esz < 128 || esz%8 != 0 || n == 0 || n*esz > gptEntriesMax {
		return nil, corruptf("GPT header", lba*ss+80, "%d entries of %d bytes", n, esz)
	}
	if entLBA < 1 || entLBA > size/ss || entLBA*ss+n*esz > size {
		return nil, corruptf("GPT header", lba*ss+72, "entries at LBA %d beyond disk", entLBA)
	}
	tab := make([]byte, n*esz)
	if _, err := r.ReadAt(tab, entLBA*ss); err != nil {
		return nil, fmt.Errorf("reading GPT entries at %#x: %w", entLBA*ss, err)
	}
	if crc32.ChecksumIEEE(tab) != le.Uint32(h[88:]) {
		return nil, corruptf("GPT partition entries", entLBA*ss, "CRC mismatch (header at %#x)", lba*ss)
	}
	out := []Partition{}
	for i := int64(0); i < n; i++ {
		e := tab[i*esz:]
		typ := e[:16]
		if isZero(typ) {
			continue
		}
		first, last := le.Uint64(e[32:]), le.Uint64(e[40:])
		if last < first || last >= uint64(size/ss) {
			continue // outside the disk: nothing to read
		}
		name := make([]uint16, 0, 36)
		for j := 56; j+1 < 128; j += 2 {
			c := le.Uint16(e[j:])
			if c == 0 {
				break
			}
			name = append(name, c)
		}
		p := Partition{Index: int(i) + 1, Scheme: "gpt", Start: int64(first) * ss,
			Size: int64(last-first+1) * ss, Type: guidString(typ), Name: string(utf16.Decode(name))}
		if p, ok := clip(p, size); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// guidString formats a GPT GUID (first three fields little-endian) canonically.
func guidString(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}
