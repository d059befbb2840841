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
		return nil, fmt.Errorf("no qcow2 magic: %w", ErrCorrupt)
	}
	hd := &qcow2Header{version: be.Uint32(h[4:]), clusterBits: uint(be.Uint32(h[20:]))}
	if hd.version != 2 && hd.version != 3 {
		return nil, fmt.Errorf("qcow2 version %d: %w", hd.version, ErrUnsupportedImage)
	}
	if hd.clusterBits < qcowMinClusterBits || hd.clusterBits > qcowMaxClusterBits {
		return nil, fmt.Errorf("qcow2 cluster bits %d: %w", hd.clusterBits, ErrCorrupt)
	}
	hlen := int64(72)
	if hd.version == 3 {
		if n < 104 {
			return nil, fmt.Errorf("qcow2 v3 header truncated (%d bytes): %w", n, ErrCorrupt)
		}
		if hlen = int64(be.Uint32(h[100:])); hlen < 104 {
			return nil, fmt.Errorf("qcow2 header length %d, at least 104: %w", hlen, ErrCorrupt)
		}
	}
	if hlen > hd.clusterSize() {
		return nil, fmt.Errorf("qcow2 header length %d exceeds the cluster size: %w", hlen, ErrCorrupt)
	}
	bo, bs := be.Uint64(h[8:]), int64(be.Uint32(h[16:]))
	if bo > uint64(hd.clusterSize()) {
		return nil, fmt.Errorf("qcow2 backing file name offset %#x beyond the first cluster: %w", bo, ErrCorrupt)
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
		return nil, fmt.Errorf("qcow2 data-file-raw bit without an external data file: %w", ErrCorrupt)
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
			return fmt.Errorf("qcow2 snapshot %d at %#x: %d bytes of extra data: %w", i, pos, extra, ErrCorrupt)
		}
		pos += qcowSnapshotHeader + extra + idLen + nameLen
		if pos-off > qcowMaxSnapTable {
			return fmt.Errorf("qcow2 snapshot table larger than %d bytes: %w", qcowMaxSnapTable, ErrCorrupt)
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
			return fmt.Errorf("qcow2 header of %d bytes truncated at %d: %w", hlen, n, ErrCorrupt)
		}
		compr = h[104]
	}
	switch {
	case compr != qcowComprZlib && compr != qcowComprZstd:
		return fmt.Errorf("qcow2 compression type %d: %w", compr, ErrUnsupportedImage)
	case compr == qcowComprZlib && hd.incompat&qcowIncompatCompr != 0:
		return fmt.Errorf("qcow2 compression type incompatible bit set with zlib compression (header length %d): %w", hlen, ErrCorrupt)
	case compr != qcowComprZlib && hd.incompat&qcowIncompatCompr == 0:
		return fmt.Errorf("qcow2 compression type %d without its incompatible bit: %w", compr, ErrCorrupt)
	}
	hd.zstd = compr == qcowComprZstd
	if rest := hd.incompat &^ qcowIncompatKnown; rest != 0 {
		return fmt.Errorf("qcow2 unknown incompatible features %#x: %w", rest, ErrUnsupportedImage)
	}
	if hd.incompat&qcowIncompatDataFile != 0 {
		return fmt.Errorf("qcow2 image with an external data file: %w", ErrUnsupportedImage)
	}
	if hd.extL2 = hd.incompat&qcowIncompatExtL2 != 0; hd.extL2 && hd.clusterBits-5 < qcowMinClusterBits {
		return fmt.Errorf("qcow2 subclusters of %d bytes: %w", hd.clusterSize()/32, ErrCorrupt)
	}
	if ro := be.Uint32(h[96:]); ro > 6 {
		return fmt.Errorf("qcow2 refcount order %d: %w", ro, ErrCorrupt)
	}
	return nil
}

// validateTable is QEMU's qcow2_validate_table: not too many entries, a cluster-aligned
// offset, and no overflow of a signed 64-bit end.
func (hd *qcow2Header) validateTable(name string, off, entries, entryLen, maxBytes uint64) error {
	if entries > maxBytes/entryLen {
		return fmt.Errorf("qcow2 %s of %d entries too large: %w", name, entries, ErrCorrupt)
	}
	if math.MaxInt64-entries*entryLen < off || off%uint64(hd.clusterSize()) != 0 {
		return fmt.Errorf("qcow2 %s offset %#x invalid: %w", name, off, ErrCorrupt)
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
		return fmt.Errorf("qcow2 image without a refcount table: %w", ErrCorrupt)
	}
	if err := hd.validateTable("refcount table", be.Uint64(h[48:]), rtc, uint64(hd.clusterSize()), qcowMaxRefTable); err != nil {
		return err
	}
	if err := hd.validateTable("snapshot table", be.Uint64(h[64:]), uint64(be.Uint32(h[60:])), qcowSnapshotHeader, qcowSnapshotHeader*qcowMaxSnapshots); err != nil {
		return err
	}
	l1Off, l1Size := be.Uint64(h[40:]), uint64(be.Uint32(h[36:]))
	if err := hd.validateTable("L1 table", l1Off, l1Size, 8, qcowMaxL1Bytes); err != nil {
		return err
	}
	vs := be.Uint64(h[24:])
	if vs > 1<<62 {
		return fmt.Errorf("qcow2 virtual size %d: %w", vs, ErrCorrupt)
	}
	hd.size, hd.l1Size, hd.l1Off = int64(vs), int64(l1Size), int64(l1Off)
	perL1 := hd.clusterBits + hd.l2Bits()
	need := (hd.size + 1<<perL1 - 1) >> perL1
	if need > math.MaxInt32 {
		return fmt.Errorf("qcow2 image of %d bytes too big: %w", vs, ErrCorrupt)
	}
	if hd.l1Size < need || hd.l1Off+hd.l1Size*8 > fileSize {
		return fmt.Errorf("qcow2 L1 table of %d entries at %#x (need %d, file %d bytes): %w", hd.l1Size, hd.l1Off, need, fileSize, ErrCorrupt)
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
		return fmt.Errorf("qcow2 backing file name %d bytes at %#x: %w", bs, bo, ErrCorrupt)
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
			return fmt.Errorf("qcow2 header extension %#x at %#x: length %d beyond %#x: %w", typ, off-8, n, end, ErrCorrupt)
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
				return fmt.Errorf("qcow2 backing format name of %d bytes: %w", n, ErrCorrupt)
			}
			hd.backingFormat = string(data)
		case qcowExtBitmaps:
			if err := hd.checkBitmaps(data); err != nil {
				return err
			}
		}
		off += (n + 7) &^ 7
	}
	return nil
}

// checkBitmaps checks the persistent dirty bitmaps extension as QEMU does when it opens
// an image (the bitmaps themselves do not change what the guest reads).
func (hd *qcow2Header) checkBitmaps(b []byte) error {
	if len(b) != 24 {
		return fmt.Errorf("qcow2 bitmaps extension of %d bytes: %w", len(b), ErrCorrupt)
	}
	if hd.autoclear&qcowAutoclearBitmaps == 0 {
		return nil // QEMU considers them inconsistent and ignores them
	}
	be := binary.BigEndian
	nb, dirSize, dirOff := be.Uint32(b), be.Uint64(b[8:]), be.Uint64(b[16:])
	switch {
	case be.Uint32(b[4:]) != 0:
		return fmt.Errorf("qcow2 bitmaps extension: reserved field not zero: %w", ErrCorrupt)
	case nb == 0 || nb > qcowMaxBitmaps:
		return fmt.Errorf("qcow2 bitmaps extension: %d bitmaps: %w", nb, ErrCorrupt)
	case dirOff%uint64(hd.clusterSize()) != 0:
		return fmt.Errorf("qcow2 bitmaps extension: directory offset %#x: %w", dirOff, ErrCorrupt)
	case dirSize > qcowMaxBitmapDir:
		return fmt.Errorf("qcow2 bitmaps extension: directory of %d bytes: %w", dirSize, ErrCorrupt)
	}
	return nil
}
