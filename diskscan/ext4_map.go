package diskscan

import (
	"encoding/binary"
	"fmt"
)

// extent maps n logical blocks of a file starting at lblk to physical blocks from pblk.
// Uninitialized extents (preallocated, unwritten) read as zeros.
type extent struct {
	lblk, pblk, n uint64
	uninit        bool
}

const (
	extentMagic    = 0xF30A
	maxExtentDepth = 5
	maxExtents     = 1 << 18 // per file; a legitimate file this fragmented is absurd
	maxMapNodes    = 1 << 16 // extent-tree nodes or indirect blocks read per file
)

// mapper accumulates the extents of one file, bounded and checked.
type mapper struct {
	o     *op
	ino   uint32
	nblk  uint64 // logical blocks covered by i_size
	seed  uint32 // per-inode checksum seed (metadata_csum)
	out   []extent
	nodes int
	at    int64 // volume offset of the entry being mapped (for errors)
}

// mapBlocks returns the sorted, non-overlapping extents of a file's first
// ceil(size/bs) logical blocks (extent tree or ext2/3 block map).
func (o *op) mapBlocks(in *inode) ([]extent, error) {
	if in.flags&flagInlineData != 0 {
		return nil, o.fs.corrupt(inodeName(in.ino), in.off+0x20, "inline data, no blocks")
	}
	m := &mapper{o: o, ino: in.ino, nblk: (uint64(in.size) + uint64(o.fs.bs) - 1) / uint64(o.fs.bs),
		seed: o.fs.inodeSeed(in.ino, in.raw), at: in.off + 0x28}
	var err error
	if in.flags&flagExtents != 0 {
		err = m.extentNode(in.iblock, in.off+0x28, -1, 0, 1<<32)
	} else {
		err = m.blockMap(in.iblock)
	}
	if err != nil {
		return nil, fmt.Errorf("mapping inode %d: %w", in.ino, err)
	}
	return o.fs.fc.patchExtents(o.fs, in.ino, m.out, m.nblk) // replayed fast commits
}

func (m *mapper) add(lblk, pblk, n uint64, uninit bool) error {
	if lblk >= m.nblk || n == 0 {
		return nil // beyond i_size: ignored, as the kernel does for reads
	}
	n = min(n, m.nblk-lblk)
	fs := m.o.fs
	if pblk < fs.firstDataBlock || pblk == 0 || pblk >= fs.blocks || n > fs.blocks-pblk {
		return m.corrupt("blocks %d+%d outside filesystem (%d blocks)", pblk, n, fs.blocks)
	}
	if k := len(m.out); k > 0 {
		last := &m.out[k-1]
		if lblk < last.lblk+last.n {
			return m.corrupt("extent at logical block %d overlaps or is out of order", lblk)
		}
		if last.lblk+last.n == lblk && last.pblk+last.n == pblk && last.uninit == uninit {
			last.n += n
			return nil
		}
	}
	if err := m.work(); err != nil {
		return err
	}
	if len(m.out) >= m.maxExtents() {
		return m.corrupt("more than %d extents", m.maxExtents())
	}
	m.out = append(m.out, extent{lblk: lblk, pblk: pblk, n: n, uninit: uninit})
	return nil
}

// extentNode walks one node of an extent tree. depth is the depth its parent expects
// (-1 for the root in the inode); [lo, hi) is the logical range the parent assigned to
// it. Depth must fall by one per level, so the walk cannot loop.
func (m *mapper) extentNode(b []byte, at int64, depth int, lo, hi uint64) error {
	le := binary.LittleEndian
	m.at = at
	if len(b) < 12 || le.Uint16(b) != extentMagic {
		return m.corrupt("extent node: bad magic")
	}
	entries := int(le.Uint16(b[2:]))
	d := int(le.Uint16(b[6:]))
	if d > maxExtentDepth || (depth >= 0 && d != depth) {
		return m.corrupt("extent node: depth %d, expected %d", d, depth)
	}
	if 12+12*entries > len(b) {
		return m.corrupt("extent node: %d entries do not fit %d bytes", entries, len(b))
	}
	for i := 0; i < entries; i++ {
		e := b[12+12*i:]
		m.at = at + 12 + 12*int64(i)
		start := uint64(le.Uint32(e))
		if start < lo || start >= hi {
			return m.corrupt("extent node: entry %d starts at %d outside [%d,%d)", i, start, lo, hi)
		}
		if start >= m.nblk {
			return nil // sorted: everything after lies beyond i_size too
		}
		if d == 0 {
			n := uint64(le.Uint16(e[4:]))
			uninit := n > 32768
			if uninit {
				n -= 32768
			}
			pblk := uint64(le.Uint32(e[8:])) | uint64(le.Uint16(e[6:]))<<32
			if start+n > hi {
				return m.corrupt("extent %d+%d beyond parent range %d", start, n, hi)
			}
			if err := m.add(start, pblk, n, uninit); err != nil {
				return err
			}
			continue
		}
		next := hi
		if i+1 < entries {
			next = uint64(le.Uint32(b[12+12*(i+1):]))
			if next <= start {
				return m.corrupt("extent index out of order at %d", start)
			}
		}
		child := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		if err := m.node(); err != nil {
			return err
		}
		ref := m.at + 4
		cb, err := m.o.block(child, ref)
		if err != nil {
			return fmt.Errorf("extent index block: %w", err)
		}
		if err := m.o.verifyExtentBlock(cb, m.seed, int64(child)*m.o.fs.bs); err != nil {
			return fmt.Errorf("extent block %d: %w", child, err)
		}
		if err := m.extentNode(cb, int64(child)*m.o.fs.bs, d-1, start, next); err != nil {
			return err
		}
	}
	return nil
}

// blockMap walks an ext2/3 block map: 12 direct pointers, then single, double and triple
// indirect blocks. Zero pointers are holes; only blocks below i_size are visited.
func (m *mapper) blockMap(iblock []byte) error {
	le := binary.LittleEndian
	per := uint64(m.o.fs.bs / 4)
	at := m.at
	for i := uint64(0); i < 12; i++ {
		m.at = at + 4*int64(i)
		if p := uint64(le.Uint32(iblock[4*i:])); p != 0 {
			if err := m.add(i, p, 1, false); err != nil {
				return err
			}
		}
	}
	base, span := uint64(12), per
	for level := 1; level <= 3; level++ {
		if base >= m.nblk {
			return nil
		}
		m.at = at + 4*int64(11+level)
		if p := uint64(le.Uint32(iblock[4*(11+level):])); p != 0 {
			if err := m.indirect(p, level, base); err != nil {
				return err
			}
		}
		base += span
		span *= per
	}
	return nil
}

// indirect reads an indirect block of the given level covering logical blocks from base.
func (m *mapper) indirect(blk uint64, level int, base uint64) error {
	if err := m.node(); err != nil {
		return err
	}
	b, err := m.o.block(blk, m.at)
	if err != nil {
		return fmt.Errorf("indirect block: %w", err)
	}
	per := uint64(len(b) / 4)
	span := uint64(1)
	for i := 1; i < level; i++ {
		span *= per
	}
	for i := uint64(0); i < per; i++ {
		lb := base + i*span
		if lb >= m.nblk {
			return nil
		}
		m.at = int64(blk)*m.o.fs.bs + 4*int64(i)
		p := uint64(binary.LittleEndian.Uint32(b[4*i:]))
		if p == 0 {
			continue
		}
		if level == 1 {
			err = m.add(lb, p, 1, false)
		} else {
			err = m.indirect(p, level-1, lb)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// A file cannot have more extents or tree nodes than the filesystem has blocks; the
// bound keeps the work a hostile inode causes proportional to the volume.
func (m *mapper) maxExtents() int { return int(min(maxExtents, m.o.fs.blocks+1)) }

func (m *mapper) node() error {
	if err := m.work(); err != nil {
		return err
	}
	m.nodes++
	if lim := int(min(maxMapNodes, m.o.fs.blocks+1)); m.nodes > lim {
		return m.corrupt("more than %d extent-tree or indirect blocks", lim)
	}
	return nil
}

func (m *mapper) work() error { return m.o.spend("ext4 block map of "+inodeName(m.ino), m.at) }

// corrupt reports a bad block map at the entry being mapped.
func (m *mapper) corrupt(format string, args ...any) error {
	return m.o.fs.corrupt("ext4 block map of "+inodeName(m.ino), m.at, format, args...)
}

// spend counts one unit of block-mapping or directory-block work. Each operation may
// do opWorkFree units on its own; beyond that it draws on the FS's shared pool
// (mapWorkLimit over the FS's lifetime). A hostile directory or file can therefore dry
// up the pool, but not the allowance of the operations on other paths: corrupting /tmp
// does not make /usr/bin unreadable. What a hostile image costs in all stays bounded
// by the operations asked for times the allowance, plus the pool. structure and at name
// what was being read when the work ran out (for the error).
func (o *op) spend(structure string, at int64) error {
	if o.work++; o.work <= o.fs.opWorkFree {
		return nil
	}
	if o.fs.mapWork.Add(1) > o.fs.mapWorkLimit() {
		return o.fs.corrupt(structure, at, "metadata work limit exhausted: this operation needed more than %d blocks or extents and the filesystem's shared allowance (%d) is spent; open the volume again",
			o.fs.opWorkFree, o.fs.mapWorkLimit())
	}
	return nil
}
