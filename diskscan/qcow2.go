package diskscan

import (
	"bytes"
	"compress/flate"
	"container/list"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// qcow2 header fields and L1/L2 entry bits.
const (
	qcowMagic           = 0x514649fb // "QFI\xfb"
	qcowOffsetMask      = 0x00fffffffffffe00
	qcowCompressed      = 1 << 62
	qcowZero            = 1
	qcowIncompatDirty   = 1 << 0
	qcowIncompatCorrupt = 1 << 1
	qcowIncompatCompr   = 1 << 3
	qcowL2CacheBytes    = 16 << 20
	qcowMaxL1Bytes      = 32 << 20
	qcowMaxBacking      = 16
)

// qcow2 is a read-only view of a qcow2 image's guest disk. Unallocated clusters read
// from the backing image, or as zeros without one. It is safe for concurrent use.
type qcow2 struct {
	f           io.ReaderAt // the image file
	fileSize    int64
	size        int64 // virtual disk size
	clusterBits uint
	l2Bits      uint // log2 of entries per L2 table
	l1          []uint64
	l1Off       int64
	backing     io.ReaderAt // nil: zeros
	backingSize int64

	mu    sync.Mutex
	l2lru *list.List // of *l2Table
	l2    map[int64]*list.Element
	l2Max int

	zstd     bool       // compressed clusters use zstd (refused)
	clusters *list.List // recently inflated compressed clusters, of *inflated
}

type inflated struct {
	entry uint64 // the L2 entry: identifies the compressed data
	data  []byte
}

const inflatedCache = 16

type l2Table struct {
	off     int64
	entries []uint64
}

// qcow2Header is what openQcow2 needs from the header.
type qcow2Header struct {
	size          int64
	clusterBits   uint
	l1Size        int64
	l1Off         int64
	backingName   string
	backingFormat string // from the header extension, "" when absent
	zstd          bool
}

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
	version := be.Uint32(h[4:])
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("qcow2 version %d: %w", version, ErrUnsupportedImage)
	}
	hd := &qcow2Header{clusterBits: uint(be.Uint32(h[20:]))}
	if hd.clusterBits < 9 || hd.clusterBits > 21 {
		return nil, fmt.Errorf("qcow2 cluster bits %d: %w", hd.clusterBits, ErrCorrupt)
	}
	if m := be.Uint32(h[32:]); m != 0 {
		return nil, fmt.Errorf("qcow2 image is encrypted (method %d): %w", m, ErrUnsupportedImage)
	}
	if version == 3 {
		if n < 104 {
			return nil, fmt.Errorf("qcow2 v3 header truncated: %w", ErrCorrupt)
		}
		// Dirty and corrupt flags concern refcounts and writers; reading is still well
		// defined. Compression type matters only for compressed clusters (zstd is refused).
		incompat := be.Uint64(h[72:])
		if rest := incompat &^ (qcowIncompatDirty | qcowIncompatCorrupt | qcowIncompatCompr); rest != 0 {
			return nil, fmt.Errorf("qcow2 incompatible features %#x (external data file or extended L2 entries): %w", rest, ErrUnsupportedImage)
		}
		hlen := be.Uint32(h[100:])
		hd.zstd = incompat&qcowIncompatCompr != 0 && hlen > 104 && n > 104 && h[104] != 0
	}
	vs := be.Uint64(h[24:])
	if vs > 1<<62 {
		return nil, fmt.Errorf("qcow2 virtual size %d: %w", vs, ErrCorrupt)
	}
	hd.size = int64(vs)
	hd.l1Size = int64(be.Uint32(h[36:]))
	hd.l1Off = int64(be.Uint64(h[40:]) & (1<<62 - 1))
	l2Bits := hd.clusterBits - 3
	need := (hd.size + 1<<(hd.clusterBits+l2Bits) - 1) >> (hd.clusterBits + l2Bits)
	if hd.l1Size < need || hd.l1Size*8 > qcowMaxL1Bytes || hd.l1Off+hd.l1Size*8 > fileSize || hd.l1Off%8 != 0 {
		return nil, fmt.Errorf("qcow2 L1 table of %d entries at %#x (need %d, file %d bytes): %w", hd.l1Size, hd.l1Off, need, fileSize, ErrCorrupt)
	}
	if bo, bs := int64(be.Uint64(h[8:])), int64(be.Uint32(h[16:])); bo != 0 {
		if bs == 0 || bs > 1023 || bo < 0 || bo+bs > fileSize {
			return nil, fmt.Errorf("qcow2 backing file name %d bytes at %#x: %w", bs, bo, ErrCorrupt)
		}
		name := make([]byte, bs)
		if _, err := r.ReadAt(name, bo); err != nil {
			return nil, fmt.Errorf("reading qcow2 backing file name: %w", err)
		}
		hd.backingName = string(name)
	}
	hlen := int64(72)
	if version == 3 {
		hlen = int64(be.Uint32(h[100:]))
	}
	if err := hd.extensions(r, hlen, fileSize); err != nil {
		return nil, err
	}
	return hd, nil
}

const qcowExtBackingFormat = 0xE2792ACA

// extensions reads the header extensions that follow the header (type, length, data
// padded to 8 bytes; type 0 ends them) and keeps the backing file format.
func (hd *qcow2Header) extensions(r io.ReaderAt, off, fileSize int64) error {
	end := min(int64(1)<<hd.clusterBits, fileSize)
	if off < 72 || off > end {
		return fmt.Errorf("qcow2 header length %d: %w", off, ErrCorrupt)
	}
	be := binary.BigEndian
	h := make([]byte, 8)
	for i := 0; i < 64 && off+8 <= end; i++ {
		if _, err := r.ReadAt(h, off); err != nil {
			return fmt.Errorf("reading qcow2 header extension at %#x: %w", off, err)
		}
		typ, n := be.Uint32(h), int64(be.Uint32(h[4:]))
		if typ == 0 {
			return nil
		}
		if n > end-off-8 {
			return fmt.Errorf("qcow2 header extension %#x at %#x: length %d: %w", typ, off, n, ErrCorrupt)
		}
		if typ == qcowExtBackingFormat {
			if n > 16 {
				return fmt.Errorf("qcow2 backing format name of %d bytes: %w", n, ErrCorrupt)
			}
			name := make([]byte, n)
			if _, err := r.ReadAt(name, off+8); err != nil {
				return fmt.Errorf("reading qcow2 backing format: %w", err)
			}
			hd.backingFormat = string(name)
		}
		off += 8 + (n+7)&^7
	}
	return nil
}

func newQcow2(f io.ReaderAt, fileSize int64, hd *qcow2Header, backing io.ReaderAt, backingSize int64) (*qcow2, error) {
	q := &qcow2{f: f, fileSize: fileSize, size: hd.size, clusterBits: hd.clusterBits, l2Bits: hd.clusterBits - 3,
		l1Off: hd.l1Off, backing: backing, backingSize: backingSize, zstd: hd.zstd,
		l2lru: list.New(), l2: make(map[int64]*list.Element), clusters: list.New()}
	q.l2Max = max(4, qcowL2CacheBytes>>hd.clusterBits)
	raw := make([]byte, hd.l1Size*8)
	if _, err := f.ReadAt(raw, hd.l1Off); err != nil {
		return nil, fmt.Errorf("reading qcow2 L1 table at %#x: %w", hd.l1Off, err)
	}
	q.l1 = make([]uint64, hd.l1Size)
	for i := range q.l1 {
		q.l1[i] = binary.BigEndian.Uint64(raw[8*i:])
	}
	return q, nil
}

func (q *qcow2) clusterSize() int64 { return 1 << q.clusterBits }

// l1Entry returns L1 entry i. An empty cached entry is re-read from the file, since a
// running guest may have allocated the L2 table since the image was opened.
func (q *qcow2) l1Entry(i int64) (uint64, error) {
	e := q.l1[i]
	if e&qcowOffsetMask != 0 {
		return e, nil
	}
	b := make([]byte, 8)
	if _, err := q.f.ReadAt(b, q.l1Off+8*i); err != nil {
		return 0, fmt.Errorf("reading qcow2 L1 entry %d: %w", i, err)
	}
	e = binary.BigEndian.Uint64(b)
	q.mu.Lock()
	q.l1[i] = e
	q.mu.Unlock()
	return e, nil
}

// l2Entry returns the L2 entry of the cluster holding guest offset off.
func (q *qcow2) l2Entry(off int64) (uint64, error) {
	cl := off >> q.clusterBits
	i1 := cl >> q.l2Bits
	i2 := cl & (1<<q.l2Bits - 1)
	if i1 >= int64(len(q.l1)) {
		return 0, fmt.Errorf("guest offset %#x beyond qcow2 L1 table: %w", off, ErrCorrupt)
	}
	e1, err := q.l1Entry(i1)
	if err != nil {
		return 0, err
	}
	l2Off := int64(e1 & qcowOffsetMask)
	if l2Off == 0 {
		return 0, nil
	}
	if l2Off%q.clusterSize() != 0 || l2Off > q.fileSize-q.clusterSize() {
		return 0, fmt.Errorf("qcow2 L1 entry %d: L2 table at %#x outside image: %w", i1, l2Off, ErrCorrupt)
	}
	t, err := q.l2Table(l2Off)
	if err != nil {
		return 0, err
	}
	e2 := t[i2]
	if e2&qcowOffsetMask == 0 && e2&(qcowZero|qcowCompressed) == 0 {
		// Unallocated in the cached copy: the guest may have written since; re-read it.
		b := make([]byte, 8)
		if _, err := q.f.ReadAt(b, l2Off+8*i2); err != nil {
			return 0, fmt.Errorf("reading qcow2 L2 entry at %#x: %w", l2Off+8*i2, err)
		}
		e2 = binary.BigEndian.Uint64(b)
	}
	return e2, nil
}

func (q *qcow2) l2Table(off int64) ([]uint64, error) {
	q.mu.Lock()
	if el, ok := q.l2[off]; ok {
		q.l2lru.MoveToFront(el)
		t := el.Value.(*l2Table).entries
		q.mu.Unlock()
		return t, nil
	}
	q.mu.Unlock()
	raw := make([]byte, q.clusterSize())
	if _, err := q.f.ReadAt(raw, off); err != nil {
		return nil, fmt.Errorf("reading qcow2 L2 table at %#x: %w", off, err)
	}
	t := make([]uint64, len(raw)/8)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(raw[8*i:])
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.l2[off]; !ok {
		q.l2[off] = q.l2lru.PushFront(&l2Table{off: off, entries: t})
		for q.l2lru.Len() > q.l2Max {
			el := q.l2lru.Back()
			q.l2lru.Remove(el)
			delete(q.l2, el.Value.(*l2Table).off)
		}
	}
	return t, nil
}

// ReadAt reads the virtual disk. Runs of adjacent allocated clusters are read with one
// ReadAt on the image file.
func (q *qcow2) ReadAt(p []byte, off int64) (n int, err error) {
	defer recoverCorrupt(&err, "qcow2")
	if off < 0 {
		return 0, fmt.Errorf("qcow2: negative offset %d", off)
	}
	if off >= q.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), q.size-off))
	done := 0
	for done < want {
		pos := off + int64(done)
		in := pos & (q.clusterSize() - 1)
		n := int(min(int64(want-done), q.clusterSize()-in))
		e, err := q.l2Entry(pos)
		if err != nil {
			return done, err
		}
		switch {
		case e&qcowCompressed != 0:
			c, err := q.inflate(e, pos-in)
			if err != nil {
				return done, err
			}
			copy(p[done:done+n], c[in:])
		case e&qcowZero != 0:
			clear(p[done : done+n])
		case e&qcowOffsetMask == 0:
			if err := q.readBacking(p[done:done+n], pos); err != nil {
				return done, err
			}
		default:
			host := int64(e&qcowOffsetMask) + in
			if host%q.clusterSize() != in || host+int64(n) > q.fileSize {
				return done, fmt.Errorf("qcow2 cluster for guest offset %#x at host %#x outside image: %w", pos, host-in, ErrCorrupt)
			}
			// Extend the read over following clusters that are contiguous in the file.
			for done+n < want {
				next := pos + int64(n)
				e2, err := q.l2Entry(next)
				if err != nil || e2&(qcowCompressed|qcowZero) != 0 || int64(e2&qcowOffsetMask) != host+int64(n) {
					break
				}
				add := int(min(int64(want-done-n), q.clusterSize()))
				if host+int64(n+add) > q.fileSize {
					break
				}
				n += add
			}
			if _, err := q.f.ReadAt(p[done:done+n], host); err != nil {
				return done, fmt.Errorf("reading qcow2 data at host %#x: %w", host, err)
			}
		}
		done += n
	}
	if want < len(p) {
		return want, io.EOF
	}
	return want, nil
}

func (q *qcow2) readBacking(p []byte, off int64) error {
	if q.backing == nil || off >= q.backingSize {
		clear(p)
		return nil
	}
	n := int(min(int64(len(p)), q.backingSize-off))
	if _, err := q.backing.ReadAt(p[:n], off); err != nil && !(err == io.EOF) {
		return fmt.Errorf("reading backing image at %#x: %w", off, err)
	}
	clear(p[n:])
	return nil
}

// inflate returns the contents of a compressed cluster (raw deflate, as qemu writes it).
// The L2 entry holds the host offset and the number of 512-byte sectors the compressed
// data may span; the output must be exactly one cluster.
func (q *qcow2) inflate(e uint64, guest int64) ([]byte, error) {
	if q.zstd {
		return nil, fmt.Errorf("qcow2 compressed cluster at guest offset %#x uses zstd: %w", guest, ErrUnsupportedImage)
	}
	q.mu.Lock()
	for el := q.clusters.Front(); el != nil; el = el.Next() {
		if c := el.Value.(*inflated); c.entry == e {
			q.clusters.MoveToFront(el)
			q.mu.Unlock()
			return c.data, nil
		}
	}
	q.mu.Unlock()
	x := 62 - (q.clusterBits - 8)
	host := int64(e & (1<<x - 1))
	sectors := int64((e>>x)&(1<<(q.clusterBits-8)-1)) + 1
	n := min(sectors*512-host&511, q.fileSize-host)
	if host <= 0 || n <= 0 {
		return nil, fmt.Errorf("qcow2 compressed cluster at guest offset %#x: data at host %#x outside image: %w", guest, host, ErrCorrupt)
	}
	comp := make([]byte, n)
	if _, err := q.f.ReadAt(comp, host); err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading qcow2 compressed cluster at host %#x: %w", host, err)
	}
	out := make([]byte, q.clusterSize())
	if _, err := io.ReadFull(flate.NewReader(bytes.NewReader(comp)), out); err != nil {
		return nil, fmt.Errorf("inflating qcow2 cluster at guest offset %#x (host %#x): %v: %w", guest, host, err, ErrCorrupt)
	}
	q.mu.Lock()
	q.clusters.PushFront(&inflated{entry: e, data: out})
	if q.clusters.Len() > inflatedCache {
		q.clusters.Remove(q.clusters.Back())
	}
	q.mu.Unlock()
	return out, nil
}
