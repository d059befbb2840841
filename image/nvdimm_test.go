package image

import (
	"encoding/binary"
	"testing"
)

// pfnInfoBlock is a valid PFN info block (Linux drivers/nvdimm/pfn.h, struct nd_pfn_sb,
// version 1.4) for a raw namespace of size bytes: what a target could write at 4 KiB
// of its own RAM so that a guest kernel probing Domain M's nvdimm claims the namespace
// in PFN mode (data at 2 MiB) instead of showing it raw. The kernel accepts it when the
// signature, the fletcher64 checksum, the parent uuid (all zero for a label-less
// namespace), the mode and the alignments are right (nd_pfn_validate).
func pfnInfoBlock(size int64) []byte {
	const dataoff, align = 2 << 20, 2 << 20
	b := make([]byte, 4096)
	copy(b[0:16], "NVDIMM_PFN_INFO\x00")
	for i := 16; i < 32; i++ { // uuid: any non-zero value
		b[i] = byte(0xa0 + i)
	}
	le := binary.LittleEndian
	le.PutUint16(b[52:], 1)                         // version_major
	le.PutUint16(b[54:], 4)                         // version_minor
	le.PutUint64(b[56:], dataoff)                   // dataoff
	le.PutUint64(b[64:], uint64(size-dataoff)/4096) // npfns
	le.PutUint32(b[72:], 1)                         // mode: PFN_MODE_RAM
	le.PutUint32(b[84:], align)                     // align
	le.PutUint32(b[88:], 4096)                      // page_size
	le.PutUint16(b[92:], 64)                        // page_struct_size
	le.PutUint64(b[4088:], ndFletcher64(b))         // checksum, over the block with it zero
	return b
}

// ndFletcher64 is the kernel's nd_fletcher64 over little-endian 32-bit words: a 32-bit
// running sum (wrapping) and a 64-bit sum of the running sums.
func ndFletcher64(b []byte) uint64 {
	var lo uint32
	var hi uint64
	for i := 0; i+4 <= len(b); i += 4 {
		lo += binary.LittleEndian.Uint32(b[i:])
		hi += uint64(lo)
	}
	return hi<<32 | uint64(lo)
}

// TestPFNInfoBlock checks the block's layout and checksum as the kernel checks them.
func TestPFNInfoBlock(t *testing.T) {
	b := pfnInfoBlock(16 << 20)
	if len(b) != 4096 || string(b[:16]) != "NVDIMM_PFN_INFO\x00" {
		t.Fatalf("size %d, signature %q", len(b), b[:16])
	}
	sum := binary.LittleEndian.Uint64(b[4088:])
	c := append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(c[4088:], 0)
	if got := ndFletcher64(c); got != sum || sum == 0 {
		t.Errorf("checksum %#x, recomputed %#x", sum, got)
	}
	c[100] ^= 1
	if ndFletcher64(c) == sum {
		t.Error("a changed byte keeps the checksum")
	}
	// fletcher64 by hand over two words: lo = 1+2 = 3, hi = 1 + 3 = 4.
	if got := ndFletcher64([]byte{1, 0, 0, 0, 2, 0, 0, 0}); got != 4<<32|3 {
		t.Errorf("ndFletcher64 = %#x, want %#x", got, uint64(4<<32|3))
	}
}
