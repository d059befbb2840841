package diskscan

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// The qcow2 header, checked as QEMU 7.2's qcow2_do_open and qcow2_read_extensions check
// it: an image QEMU refuses to open is refused here too (ErrCorrupt for an invalid field,
// ErrUnsupportedImage for a feature this package does not read), so that Domain M never
// reads a disk that the target's QEMU cannot have been running from.

const (
	qcowIncompatDirty    = 1 << 0
	qcowIncompatCorrupt  = 1 << 1
	qcowIncompatDataFile = 1 << 2
	qcowIncompatCompr    = 1 << 3
	qcowIncompatExtL2    = 1 << 4
	qcowIncompatKnown    = 1<<5 - 1 // QCOW2_INCOMPAT_MASK

	qcowComprZlib = 0
	qcowComprZstd = 1

	qcowMinClusterBits   = 9
	qcowMaxClusterBits   = 21
	qcowMaxRefTable      = 8 << 20  // QCOW_MAX_REFTABLE_SIZE
	qcowMaxL1Bytes       = 32 << 20 // QCOW_MAX_L1_SIZE
	qcowSnapshotHeader   = 40       // sizeof(QCowSnapshotHeader)
	qcowMaxSnapshots     = 65536
	qcowMaxBitmaps       = 65535
	qcowMaxBitmapDir     = 1024 * qcowMaxBitmaps
	qcowAutoclearBitmaps = 1
	qcowAutoclearRaw     = 2 // data-file-raw
	qcowMaxSnapExtra     = 1024
	qcowMaxSnapTable     = 1024 * qcowMaxSnapshots

	qcowExtEnd           = 0
	qcowExtBackingFormat = 0xE2792ACA
	qcowExtBitmaps       = 0x23852875
)

// qcow2Header is what openQcow2 needs from the header.
type qcow2Header struct {
	version       uint32
	size          int64
	clusterBits   uint
	extL2         bool // 128-bit L2 entries with 32 subclusters per cluster
	l1Size        int64
	l1Off         int64
	backingName   string
	backingFormat string // from the header extension, "" when absent
	zstd          bool
	incompat      uint64
	autoclear     uint64
}

func (hd *qcow2Header) clusterSize() int64 { return 1 << hd.clusterBits }

// parseQcow2Header validates the header. fileSize bounds every table offset.
func parseQcow2Header(r io.ReaderAt, fileSize int64) (*qcow2Header, error) {
	h := make([]byte, 112)
	n, err := r.ReadAt(h, 0)
	if n < 72 {
		return nil, fmt.Errorf("reading qcow2 header: %w", err)
	}
	be := binary.BigEndian
	if be.Uint32(h) != qcowMagic {
		return nil, corruptf("qcow2 header", 0, "no qcow2 magic")
	}
	hd := &qcow2Header{version: be.Uint32(h[4:]), clusterBits: uint(be.Uint32(h[20:]))}
	if hd.version != 2 && hd.version != 3 {
		return nil, fmt.Errorf("qcow2 version %d: %w", hd.version, ErrUnsupportedImage)
	}
	if hd.clusterBits < qcowMinClusterBits || hd.clusterBits > qcowMaxClusterBits {
		return nil, corruptf("qcow2 header", 20, "cluster bits %d", hd.clusterBits)
	}
	hlen := int64(72)
	if hd.version == 3 {
		if n < 104 {
			return nil, corruptf("qcow2 header", 4, "v3 header truncated (%d bytes)", n)
		}
		if hlen = int64(be.Uint32(h[100:])); hlen < 104 {
			return nil, corruptf("qcow2 header", 100, "header length %d, at least 104", hlen)
		}
	}
	if hlen > hd.clusterSize() {
		return nil, corruptf("qcow2 header", 100, "header length %d exceeds the cluster size", hlen)
	}
	bo, bs := be.Uint64(h[8:]), int64(be.Uint32(h[16:]))
	if bo > uint64(hd.clusterSize()) {
		return nil, corruptf("qcow2 header", 8, "backing file name offset %#x beyond the first cluster", bo)
	}
	extEnd := hd.clusterSize()
	if bo != 0 {
		extEnd = int64(bo)
	}
	if err := hd.features(h, n, hlen); err != nil {
		return nil, err
	}
	if err := hd.tables(h, fileSize); err != nil {
		return nil, err
	}
	if err := hd.extensions(r, hlen, extEnd); err != nil {
		return nil, err
	}
	if hd.autoclear&qcowAutoclearRaw != 0 {
		return nil, corruptf("qcow2 header", 88, "data-file-raw bit without an external data file")
	}
	if err := hd.readBackingName(r, int64(bo), bs, fileSize); err != nil {
		return nil, err
	}
	if err := hd.checkSnapshots(r, be.Uint64(h[64:]), be.Uint32(h[60:])); err != nil {
		return nil, err
	}
	return hd, nil
}

// checkSnapshots walks the internal snapshot table as QEMU's qcow2_read_snapshots does
// when it opens an image: each entry's extra data at most 1 KiB, the table at most
// 64 MiB. (Bytes past the end of the file read as zeros there, as they do in QEMU.)
func (hd *qcow2Header) checkSnapshots(r io.ReaderAt, off uint64, n uint32) error {
	be := binary.BigEndian
	h := make([]byte, qcowSnapshotHeader)
	pos := off
	for i := range n {
		pos = (pos + 7) &^ 7
		clear(h)
		if _, err := r.ReadAt(h, int64(pos)); err != nil && err != io.EOF {
			return fmt.Errorf("reading qcow2 snapshot %d at %#x: %w", i, pos, err)
		}
		extra, idLen, nameLen := uint64(be.Uint32(h[36:])), uint64(be.Uint16(h[12:])), uint64(be.Uint16(h[14:]))
		if extra > qcowMaxSnapExtra {
			return corruptf(fmt.Sprintf("qcow2 snapshot %d", i), int64(pos)+36, "%d bytes of extra data", extra)
		}
		pos += qcowSnapshotHeader + extra + idLen + nameLen
		if pos-off > qcowMaxSnapTable {
			return corruptf("qcow2 snapshot table", int64(off), "larger than %d bytes", qcowMaxSnapTable)
		}
	}
	return nil
}

// features checks the version 3 feature bits, refcount order and compression type.
func (hd *qcow2Header) features(h []byte, n int, hlen int64) error {
	be := binary.BigEndian
	if hd.version == 2 {
		return nil
	}
	hd.incompat, hd.autoclear = be.Uint64(h[72:]), be.Uint64(h[88:])
	compr := byte(qcowComprZlib)
	if hlen > 104 {
		if n <= 104 {
			return corruptf("qcow2 header", 100, "header of %d bytes truncated at %d", hlen, n)
		}
		compr = h[104]
	}
	switch {
	case compr != qcowComprZlib && compr != qcowComprZstd:
		return fmt.Errorf("qcow2 compression type %d: %w", compr, ErrUnsupportedImage)
	case compr == qcowComprZlib && hd.incompat&qcowIncompatCompr != 0:
		return corruptf("qcow2 header", 72, "compression type incompatible bit set with zlib compression (header length %d)", hlen)
	case compr != qcowComprZlib && hd.incompat&qcowIncompatCompr == 0:
		return corruptf("qcow2 header", 104, "compression type %d without its incompatible bit", compr)
	}
	hd.zstd = compr == qcowComprZstd
	if rest := hd.incompat &^ qcowIncompatKnown; rest != 0 {
		return fmt.Errorf("qcow2 unknown incompatible features %#x: %w", rest, ErrUnsupportedImage)
	}
	if hd.incompat&qcowIncompatDataFile != 0 {
		return fmt.Errorf("qcow2 image with an external data file: %w", ErrUnsupportedImage)
	}
	if hd.extL2 = hd.incompat&qcowIncompatExtL2 != 0; hd.extL2 && hd.clusterBits-5 < qcowMinClusterBits {
		return corruptf("qcow2 header", 20, "subclusters of %d bytes", hd.clusterSize()/32)
	}
	if ro := be.Uint32(h[96:]); ro > 6 {
		return corruptf("qcow2 header", 96, "refcount order %d", ro)
	}
	return nil
}

// validateTable is QEMU's qcow2_validate_table: not too many entries, a cluster-aligned
// offset, and no overflow of a signed 64-bit end. offField and countField are where the
// header holds the table's offset and size (for errors).
func (hd *qcow2Header) validateTable(name string, off, entries, entryLen, maxBytes uint64, offField, countField int64) error {
	if entries > maxBytes/entryLen {
		return corruptf("qcow2 header", countField, "%s of %d entries too large", name, entries)
	}
	if math.MaxInt64-entries*entryLen < off || off%uint64(hd.clusterSize()) != 0 {
		return corruptf("qcow2 header", offField, "%s offset %#x invalid", name, off)
	}
	return nil
}

// tables checks the refcount, snapshot and L1 tables' places and sizes and the size.
func (hd *qcow2Header) tables(h []byte, fileSize int64) error {
	be := binary.BigEndian
	if m := be.Uint32(h[32:]); m != 0 {
		return fmt.Errorf("qcow2 image is encrypted (method %d): %w", m, ErrUnsupportedImage)
	}
	rtc := uint64(be.Uint32(h[56:]))
	if rtc == 0 {
		return corruptf("qcow2 header", 56, "no refcount table")
	}
	if err := hd.validateTable("refcount table", be.Uint64(h[48:]), rtc, uint64(hd.clusterSize()), qcowMaxRefTable, 48, 56); err != nil {
		return err
	}
	if err := hd.validateTable("snapshot table", be.Uint64(h[64:]), uint64(be.Uint32(h[60:])), qcowSnapshotHeader, qcowSnapshotHeader*qcowMaxSnapshots, 64, 60); err != nil {
		return err
	}
	l1Off, l1Size := be.Uint64(h[40:]), uint64(be.Uint32(h[36:]))
	if err := hd.validateTable("L1 table", l1Off, l1Size, 8, qcowMaxL1Bytes, 40, 36); err != nil {
		return err
	}
	vs := be.Uint64(h[24:])
	if vs > 1<<62 {
		return corruptf("qcow2 header", 24, "virtual size %d", vs)
	}
	hd.size, hd.l1Size, hd.l1Off = int64(vs), int64(l1Size), int64(l1Off)
	perL1 := hd.clusterBits + hd.l2Bits()
	need := (hd.size + 1<<perL1 - 1) >> perL1
	if need > math.MaxInt32 {
		return corruptf("qcow2 header", 24, "image of %d bytes too big", vs)
	}
	if hd.l1Size < need || hd.l1Off+hd.l1Size*8 > fileSize {
		return corruptf("qcow2 header", 36, "L1 table of %d entries at %#x (need %d, file %d bytes)", hd.l1Size, hd.l1Off, need, fileSize)
	}
	return nil
}

// l2Bits is log2 of the entries of an L2 table (16-byte entries with subclusters).
func (hd *qcow2Header) l2Bits() uint {
	if hd.extL2 {
		return hd.clusterBits - 4
	}
	return hd.clusterBits - 3
}

// readBackingName reads the backing file name (at most 1023 bytes, inside the first
// cluster; an empty name means no backing file).
func (hd *qcow2Header) readBackingName(r io.ReaderAt, bo, bs, fileSize int64) error {
	if bo == 0 {
		return nil
	}
	if bs > min(1023, hd.clusterSize()-bo) || bo+bs > fileSize {
		return corruptf("qcow2 header", 16, "backing file name %d bytes at %#x", bs, bo)
	}
	name := make([]byte, bs)
	if _, err := r.ReadAt(name, bo); err != nil {
		return fmt.Errorf("reading qcow2 backing file name: %w", err)
	}
	hd.backingName = string(name)
	return nil
}

// extensions reads the header extensions from off to end (type, length, data padded to
// 8 bytes; type 0 ends them), keeps the backing file format and checks what QEMU checks.
func (hd *qcow2Header) extensions(r io.ReaderAt, off, end int64) error {
	be := binary.BigEndian
	h := make([]byte, 8)
	for off < end {
		if _, err := r.ReadAt(h, off); err != nil {
			return fmt.Errorf("reading qcow2 header extension at %#x: %w", off, err)
		}
		typ, n := be.Uint32(h), int64(be.Uint32(h[4:]))
		off += 8
		if off > end || n > end-off {
			return corruptf(fmt.Sprintf("qcow2 header extension %#x", typ), off-4, "length %d beyond %#x", n, end)
		}
		data := make([]byte, n)
		if _, err := r.ReadAt(data, off); err != nil {
			return fmt.Errorf("reading qcow2 header extension %#x at %#x: %w", typ, off, err)
		}
		switch typ {
		case qcowExtEnd:
			return nil
		case qcowExtBackingFormat:
			if n >= 16 {
				return corruptf("qcow2 backing format extension", off-4, "name of %d bytes", n)
			}
			hd.backingFormat = string(data)
		case qcowExtBitmaps:
			if err := hd.checkBitmaps(data, off); err != nil {
				return err
			}
		}
		off += (n + 7) &^ 7
	}
	return nil
}

// checkBitmaps checks the persistent dirty bitmaps extension as QEMU does when it opens
// an image (the bitmaps themselves do not change what the guest reads). at is the file
// offset of b.
func (hd *qcow2Header) checkBitmaps(b []byte, at int64) error {
	const what = "qcow2 bitmaps extension"
	if len(b) != 24 {
		return corruptf(what, at-4, "%d bytes", len(b))
	}
	if hd.autoclear&qcowAutoclearBitmaps == 0 {
		return nil // QEMU considers them inconsistent and ignores them
	}
	be := binary.BigEndian
	nb, dirSize, dirOff := be.Uint32(b), be.Uint64(b[8:]), be.Uint64(b[16:])
	switch {
	case be.Uint32(b[4:]) != 0:
		return corruptf(what, at+4, "reserved field not zero")
	case nb == 0 || nb > qcowMaxBitmaps:
		return corruptf(what, at, "%d bitmaps", nb)
	case dirOff%uint64(hd.clusterSize()) != 0:
		return corruptf(what, at+16, "directory offset %#x", dirOff)
	case dirSize > qcowMaxBitmapDir:
		return corruptf(what, at+8, "directory of %d bytes", dirSize)
	}
	return nil
}
