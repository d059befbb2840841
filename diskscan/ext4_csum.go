package diskscan

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// metadata_csum verification. A checksum mismatch is what a read torn by a concurrent
// guest write looks like, so it is reported as ErrCorrupt and retried with a fresh read.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's raw crc32c (no final inversion), which ext4 chains.
func crc32c(seed uint32, b []byte) uint32 { return ^crc32.Update(^seed, castagnoli, b) }

const incompatCsumSeed = 0x2000

// csumSeedFrom returns the checksum seed from the superblock: s_checksum_seed, or
// crc32c(~0, uuid).
func csumSeedFrom(sb []byte, incompat uint32) uint32 {
	if incompat&incompatCsumSeed != 0 {
		return binary.LittleEndian.Uint32(sb[0x270:])
	}
	return crc32c(^uint32(0), sb[0x68:0x78])
}

func (fs *ext4FS) csums() bool { return fs.roCompat&roCompatMetadataCsum != 0 }

// inodeSeed is the per-inode seed: crc32c over the inode number and generation.
func (fs *ext4FS) inodeSeed(ino uint32, raw []byte) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], ino)
	c := crc32c(fs.csumSeed, b[:])
	return crc32c(c, raw[0x64:0x68]) // i_generation
}

var zero2 [2]byte

// verifyInode checks an inode's checksum (low 16 bits at 0x7C, high 16 at 0x82 when the
// extra fields hold it), computed with both fields zeroed.
func (fs *ext4FS) verifyInode(ino uint32, raw []byte, extra, off int64) error {
	if !fs.csums() {
		return nil
	}
	le := binary.LittleEndian
	hasHi := len(raw) > 128 && extra >= 4
	want := uint32(le.Uint16(raw[0x7C:]))
	// The checksum fields count as zeros; computed piecewise, without copying the inode.
	zero := zero2[:]
	got := crc32c(fs.inodeSeed(ino, raw), raw[:0x7C])
	got = crc32c(got, zero)
	if hasHi {
		want |= uint32(le.Uint16(raw[0x82:])) << 16
		got = crc32c(got, raw[0x7E:0x82])
		got = crc32c(got, zero)
		got = crc32c(got, raw[0x84:])
	} else {
		got = crc32c(got, raw[0x7E:])
	}
	if !hasHi {
		got &= 0xFFFF
	}
	if got != want {
		return fs.corrupt(inodeName(ino), off+0x7C, "checksum %#x, computed %#x", want, got)
	}
	return nil
}

// verifyExtentBlock checks the tail checksum that follows eh_max entries of an extent
// tree block.
func (o *op) verifyExtentBlock(b []byte, seed uint32, at int64) error {
	if !o.fs.csums() {
		return nil
	}
	tail := 12 + 12*int(binary.LittleEndian.Uint16(b[4:]))
	if tail+4 > len(b) {
		return o.fs.corrupt("ext4 extent block", at+4, "eh_max leaves no room for the checksum")
	}
	if got, want := crc32c(seed, b[:tail]), binary.LittleEndian.Uint32(b[tail:]); got != want {
		return o.fs.corrupt("ext4 extent block", at+int64(tail), "checksum %#x, computed %#x", want, got)
	}
	return nil
}

// verifyDirBlock checks a linear directory block's tail entry (inode 0, rec_len 12,
// name_len 0, type 0xDE, then the checksum). Blocks without that tail (htree index
// blocks, whose checksum sits elsewhere) are not checked.
func (o *op) verifyDirBlock(b []byte, seed uint32, at int64) error {
	if !o.fs.csums() || len(b) < 12 {
		return nil
	}
	t := b[len(b)-12:]
	le := binary.LittleEndian
	if le.Uint32(t) != 0 || le.Uint16(t[4:]) != 12 || t[6] != 0 || t[7] != 0xDE {
		return nil
	}
	if got, want := crc32c(seed, b[:len(b)-12]), le.Uint32(t[8:]); got != want {
		return o.fs.corrupt("ext4 directory block", at+int64(len(b))-4, "checksum %#x, computed %#x", want, got)
	}
	return nil
}

// verifyXattrBlock checks an xattr block's h_checksum (offset 0x10): crc32c seeded with
// the filesystem seed and the little-endian 64-bit block number, over the block with the
// checksum zeroed.
func (o *op) verifyXattrBlock(b []byte, blk uint64) error {
	if !o.fs.csums() {
		return nil
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], blk)
	c := crc32c(o.fs.csumSeed, n[:])
	c = crc32c(c, b[:0x10])
	c = crc32c(c, []byte{0, 0, 0, 0})
	c = crc32c(c, b[0x14:])
	if want := binary.LittleEndian.Uint32(b[0x10:]); c != want {
		return o.fs.corrupt(fmt.Sprintf("ext4 xattr block %d", blk), int64(blk)*o.fs.bs+0x10, "checksum %#x, computed %#x", want, c)
	}
	return nil
}
