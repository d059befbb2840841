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

// qcow2 L1/L2 entry bits and limits.
const (
	qcowMagic        = 0x514649fb // "QFI\xfb"
	qcowOffsetMask   = 0x00fffffffffffe00
	qcowCompressed   = 1 << 62
	qcowZero         = 1
	qcowL2CacheBytes = 16 << 20
	qcowMaxBacking   = 16
	qcowSubclusters  = 32 // per cluster with extended L2 entries
)

// qcow2 is a read-only view of a qcow2 image's guest disk. Unallocated clusters (or
// subclusters, with extended L2 entries) read from the backing image, or as zeros without
// one. It is safe for concurrent use.
type qcow2 struct {
	f           io.ReaderAt // the image file
	fileSize    int64
	size        int64 // virtual disk size
	clusterBits uint
	l2Bits      uint // log2 of entries per L2 table
	extL2       bool // 128-bit L2 entries: descriptor and subcluster bitmap
	scBits      uint // log2 of the subcluster size (the cluster size without extL2)
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

func newQcow2(f io.ReaderAt, fileSize int64, hd *qcow2Header, backing io.ReaderAt, backingSize int64) (*qcow2, error) {
	q := &qcow2{f: f, fileSize: fileSize, size: hd.size, clusterBits: hd.clusterBits, l2Bits: hd.l2Bits(),
		extL2: hd.extL2, scBits: hd.clusterBits, l1Off: hd.l1Off, backing: backing, backingSize: backingSize, zstd: hd.zstd,
		l2lru: list.New(), l2: make(map[int64]*list.Element), clusters: list.New()}
	if q.extL2 {
		q.scBits -= 5 // 32 subclusters
	}
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

// l2Entry returns the L2 descriptor of the cluster holding guest offset off and, with
// extended L2 entries, its subcluster bitmap. fresh re-reads them from the file, since a
// running guest may have allocated the cluster since the table was cached.
func (q *qcow2) l2Entry(off int64, fresh bool) (e, bitmap uint64, err error) {
	cl := off >> q.clusterBits
	i1 := cl >> q.l2Bits
	i2 := cl & (1<<q.l2Bits - 1)
	if i1 >= int64(len(q.l1)) {
		return 0, 0, corruptf("qcow2 header", 36, "guest offset %#x beyond the L1 table", off)
	}
	e1, err := q.l1Entry(i1)
	if err != nil {
		return 0, 0, err
	}
	l2Off := int64(e1 & qcowOffsetMask)
	if l2Off == 0 {
		return 0, 0, nil
	}
	if l2Off%q.clusterSize() != 0 || l2Off > q.fileSize-q.clusterSize() {
		return 0, 0, corruptf(fmt.Sprintf("qcow2 L1 entry %d", i1), q.l1Off+8*i1, "L2 table at %#x outside image", l2Off)
	}
	width := int64(1) // 64-bit words per L2 entry
	if q.extL2 {
		width = 2
	}
	if fresh {
		b := make([]byte, 8*width)
		if _, err := q.f.ReadAt(b, l2Off+8*width*i2); err != nil {
			return 0, 0, fmt.Errorf("reading qcow2 L2 entry at %#x: %w", l2Off+8*width*i2, err)
		}
		e = binary.BigEndian.Uint64(b)
		if q.extL2 {
			bitmap = binary.BigEndian.Uint64(b[8:])
		}
		return e, bitmap, nil
	}
	t, err := q.l2Table(l2Off)
	if err != nil {
		return 0, 0, err
	}
	if q.extL2 {
		return t[2*i2], t[2*i2+1], nil
	}
	return t[i2], 0, nil
}

// What a subcluster (a cluster without extended L2 entries) reads from.
type qcowKind int

const (
	qcowData     qcowKind = iota // the image file, at host
	qcowZeros                    // zeros
	qcowBacking                  // the backing image, or zeros without one
	qcowDeflated                 // a compressed cluster
)

// qcowSpan is a run of guest bytes that read from the same kind of place.
type qcowSpan struct {
	kind  qcowKind
	entry uint64 // L2 descriptor (compressed clusters)
	host  int64  // image file offset of the span's first byte (qcowData)
	n     int64  // bytes, up to the end of the run of like subclusters in the cluster
}

// kind classifies subcluster sc of a cluster (QEMU's qcow2_get_subcluster_type): the
// zero flag of a descriptor counts only without subclusters; with them, a subcluster is
// zero by its zero bit, allocated by its allocation bit, else unallocated. A bitmap that
// marks a subcluster both, or allocates one in a cluster without a host offset, is
// invalid.
// pos is the guest offset, for errors.
func (q *qcow2) kind(e, bitmap uint64, sc uint, pos int64) (qcowKind, error) {
	switch {
	case e&qcowCompressed != 0:
		return qcowDeflated, nil
	case !q.extL2 && e&qcowZero != 0:
		return qcowZeros, nil
	case !q.extL2 && e&qcowOffsetMask == 0:
		return qcowBacking, nil
	case !q.extL2:
		return qcowData, nil
	}
	alloc, zero := uint32(bitmap), uint32(bitmap>>32)
	switch {
	case e&qcowOffsetMask != 0 && alloc&zero != 0, e&qcowOffsetMask == 0 && alloc != 0:
		return 0, corruptf("qcow2 L2 entry", q.l2EntryAt(pos), "descriptor %#x: invalid subcluster bitmap %#x", e, bitmap)
	case zero&(1<<sc) != 0:
		return qcowZeros, nil
	case alloc&(1<<sc) != 0:
		return qcowData, nil
	}
	return qcowBacking, nil
}

// span describes the guest bytes from pos to the end of pos's run of subclusters of one
// kind in its cluster.
func (q *qcow2) span(pos int64) (qcowSpan, error) {
	e, bitmap, err := q.l2Entry(pos, false)
	if err != nil {
		return qcowSpan{}, err
	}
	in := pos & (q.clusterSize() - 1)
	sc := uint(in >> q.scBits)
	k, err := q.kind(e, bitmap, sc, pos)
	if err == nil && k == qcowBacking {
		// Unallocated in the cached table: the guest may have written since; re-read it.
		if e, bitmap, err = q.l2Entry(pos, true); err == nil {
			k, err = q.kind(e, bitmap, sc, pos)
		}
	}
	if err != nil {
		return qcowSpan{}, err
	}
	if host := int64(e & qcowOffsetMask); k != qcowDeflated && host%q.clusterSize() != 0 {
		return qcowSpan{}, corruptf("qcow2 L2 entry", q.l2EntryAt(pos), "cluster for guest offset %#x at unaligned host offset %#x", pos, host)
	}
	end := int64(sc+1) << q.scBits
	for end < q.clusterSize() && k != qcowDeflated {
		if k2, _ := q.kind(e, bitmap, uint(end>>q.scBits), pos); k2 != k {
			break
		}
		end += 1 << q.scBits
	}
	if k == qcowDeflated {
		end = q.clusterSize()
	}
	return qcowSpan{kind: k, entry: e, host: int64(e&qcowOffsetMask) + in, n: end - in}, nil
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
		s, err := q.span(pos)
		if err != nil {
			return done, err
		}
		var n int
		if s.kind == qcowData {
			n, err = q.readData(p[done:want], pos, s)
		} else {
			n = int(min(int64(want-done), s.n))
			err = q.readSpan(p[done:done+n], pos, s)
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	if want < len(p) {
		return want, io.EOF
	}
	return want, nil
}

// readSpan fills p (at most one span) from a span that is not image data.
func (q *qcow2) readSpan(p []byte, pos int64, s qcowSpan) error {
	switch s.kind {
	case qcowDeflated:
		in := pos & (q.clusterSize() - 1)
		c, err := q.inflate(s.entry, pos-in)
		if err != nil {
			return err
		}
		copy(p, c[in:])
	case qcowZeros:
		clear(p)
	case qcowBacking:
		return q.readBacking(p, pos)
	}
	return nil
}

// readData reads image data for span s at guest offset pos into p, extended over the
// following data spans that are contiguous in the file; it returns the bytes read.
func (q *qcow2) readData(p []byte, pos int64, s qcowSpan) (int, error) {
	n := min(int64(len(p)), s.n)
	for n < int64(len(p)) {
		s2, err := q.span(pos + n)
		if err != nil || s2.kind != qcowData || s2.host != s.host+n {
			break
		}
		n += min(int64(len(p))-n, s2.n)
	}
	if s.host+n > q.fileSize {
		return 0, corruptf("qcow2 L2 entry", q.l2EntryAt(pos), "data for guest offset %#x at host %#x+%d beyond the image file", pos, s.host, n)
	}
	if _, err := q.f.ReadAt(p[:n], s.host); err != nil {
		return 0, fmt.Errorf("reading qcow2 data at host %#x: %w", s.host, err)
	}
	return int(n), nil
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
		return nil, corruptf("qcow2 L2 entry", q.l2EntryAt(guest), "compressed cluster at guest offset %#x: data at host %#x outside image", guest, host)
	}
	comp := make([]byte, n)
	if _, err := q.f.ReadAt(comp, host); err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading qcow2 compressed cluster at host %#x: %w", host, err)
	}
	out := make([]byte, q.clusterSize())
	if _, err := io.ReadFull(flate.NewReader(bytes.NewReader(comp)), out); err != nil {
		return nil, &CorruptError{Structure: "qcow2 compressed cluster", Offset: host,
			Reason: fmt.Sprintf("inflating the cluster at guest offset %#x", guest), Err: err}
	}
	q.mu.Lock()
	q.clusters.PushFront(&inflated{entry: e, data: out})
	if q.clusters.Len() > inflatedCache {
		q.clusters.Remove(q.clusters.Back())
	}
	q.mu.Unlock()
	return out, nil
}

// l2EntryAt is the file offset of the L2 entry of guest offset pos, for errors about it;
// the L1 entry's when it names no valid L2 table, the L1 size field's beyond the table.
func (q *qcow2) l2EntryAt(pos int64) int64 {
	cl := pos >> q.clusterBits
	i1, i2 := cl>>q.l2Bits, cl&(1<<q.l2Bits-1)
	if pos < 0 || i1 >= int64(len(q.l1)) {
		return 36
	}
	q.mu.Lock()
	l2Off := int64(q.l1[i1] & qcowOffsetMask)
	q.mu.Unlock()
	if l2Off == 0 || l2Off%q.clusterSize() != 0 || l2Off > q.fileSize-q.clusterSize() {
		return q.l1Off + 8*i1
	}
	width := int64(8)
	if q.extL2 {
		width = 16
	}
	return l2Off + width*i2
}
