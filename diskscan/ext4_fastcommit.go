package diskscan

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
)

// Fast commits (ext4 fast_commit, journal feature 0x20) are logical records written to
// the blocks after the log: an inode's new fields, block ranges added to or removed from
// a file, directory entries created, linked or unlinked. After the log, the kernel scans
// them (ext4_fc_replay_scan: tags up to the last TAIL whose transaction and crc32c hold)
// and replays them (ext4_fc_replay). Here the scan is the kernel's; the replay is done at
// the level this reader works at: an inode read gets the fields of its INODE tags, a
// file's block map gets its ranges, a directory listing gets its entries, in the order of
// the tags. A scan the kernel would fail makes the whole journal unreplayable.

const (
	fcTagAddRange = 1
	fcTagDelRange = 2
	fcTagCreat    = 3
	fcTagLink     = 4
	fcTagUnlink   = 5
	fcTagInode    = 6
	fcTagPad      = 7
	fcTagTail     = 8
	fcTagHead     = 9

	// A hostile fast-commit area is bounded: tags kept, and bytes of their values (the
	// default area is 256 blocks).
	fcMaxTags  = 1 << 20
	fcMaxBytes = 32 << 20
)

// fcTag is one tag of a fast commit: its type and value.
type fcTag struct {
	tag uint16
	val []byte
}

// fcScan is the state of ext4_fc_replay_scan over the fast-commit blocks.
type fcScan struct {
	j       *journal
	tid     uint32 // the transaction the fast commits must follow (end_transaction)
	tags    []fcTag
	valid   int    // tags up to the last valid TAIL (fc_replay_num_tags)
	crc     uint32 // running crc32c since the last TAIL
	bytes   int    // value bytes kept
	started bool
}

// scanFastCommits returns the tags the kernel would replay (none when there is no fast
// commit for transaction tid), or an error matching ErrJournal when the kernel's scan
// would fail, which fails the whole recovery.
func (j *journal) scanFastCommits(tid uint32, inodeSize int) ([]fcTag, error) {
	s := &fcScan{j: j, tid: tid}
	for blk := j.last + 1; blk < j.maxlen; blk++ {
		b, err := j.block(blk)
		if err != nil {
			return nil, fmt.Errorf("fast-commit area: %w", err)
		}
		more, err := s.block(b, blk, inodeSize)
		if err != nil {
			return nil, err
		}
		if !more {
			break
		}
	}
	return s.tags[:s.valid], nil
}

// block scans one fast-commit block; more is false when the scan stops.
func (s *fcScan) block(b []byte, blk uint64, inodeSize int) (more bool, err error) {
	le := binary.LittleEndian
	if !s.started {
		if le.Uint16(b) != fcTagHead {
			return false, nil // no fast commit since the area was last reset
		}
		s.started = true
	}
	for cur := 0; cur < len(b)-4; {
		tag, n := le.Uint16(b[cur:]), int(le.Uint16(b[cur+2:]))
		if cur+4+n > len(b) || !fcValueLenValid(tag, n, inodeSize) || len(s.tags) >= fcMaxTags || s.bytes+n > fcMaxBytes {
			return false, s.stop(fmt.Errorf("fast-commit block %d: tag %d of %d bytes at %d invalid", blk, tag, n, cur))
		}
		rec := b[cur : cur+4+n]
		switch tag {
		case fcTagHead:
			if f := le.Uint32(rec[4:]); f != 0 {
				return false, fmt.Errorf("fast-commit block %d: unsupported features %#x: %w", blk, f, ErrJournal)
			}
			if le.Uint32(rec[8:]) != s.tid {
				return false, nil
			}
		case fcTagTail:
			s.crc = crc32c(s.crc, rec[:8])
			s.tags = append(s.tags, fcTag{tag, rec[4:]})
			ok := le.Uint32(rec[4:]) == s.tid && le.Uint32(rec[8:]) == s.crc
			s.crc = 0
			if !ok {
				return false, s.stop(fmt.Errorf("fast-commit block %d: tail at %d: transaction or checksum mismatch", blk, cur))
			}
			s.valid = len(s.tags)
			cur += 4 + n
			continue
		case fcTagAddRange, fcTagDelRange, fcTagCreat, fcTagLink, fcTagUnlink, fcTagInode, fcTagPad:
		default:
			return false, s.stop(fmt.Errorf("fast-commit block %d: unknown tag %d at %d", blk, tag, cur))
		}
		s.crc = crc32c(s.crc, rec)
		var val []byte
		if tag != fcTagPad {
			val = append([]byte(nil), rec[4:]...)
			s.bytes += n
		}
		s.tags = append(s.tags, fcTag{tag, val})
		cur += 4 + n
	}
	return true, nil
}

// stop ends the scan at a bad tag: harmless after a valid fast commit (the kernel keeps
// those), an error that fails the recovery before one.
func (s *fcScan) stop(why error) error {
	if s.valid > 0 {
		return nil
	}
	return fmt.Errorf("%v, before any valid fast commit: %w", why, ErrJournal)
}

// fcValueLenValid is ext4_fc_value_len_isvalid.
func fcValueLenValid(tag uint16, n, inodeSize int) bool {
	switch tag {
	case fcTagAddRange:
		return n == 16
	case fcTagDelRange:
		return n == 12
	case fcTagCreat, fcTagLink, fcTagUnlink:
		return n-8 >= 1 && n-8 <= 255
	case fcTagInode:
		return n-4 >= 128 && n-4 <= inodeSize
	case fcTagPad:
		return true
	case fcTagTail, fcTagHead:
		return n == 8 || (tag == fcTagTail && n > 8)
	}
	return false
}

// fcReplay is the effect of the replayed fast commits, per inode, in tag order.
type fcReplay struct {
	inodes map[uint32][][]byte   // INODE tags: the raw inode (fc_raw_inode)
	ranges map[uint32][]fcRange  // ADD_RANGE and DEL_RANGE tags
	dirs   map[uint32][]fcDentry // CREAT, LINK and UNLINK tags, by parent directory
}

type fcRange struct {
	lblk, pblk, n uint64
	uninit, del   bool
}

type fcDentry struct {
	name   string
	ino    uint32
	unlink bool
}

// newFCReplay sorts the replayed tags by what they change.
func newFCReplay(tags []fcTag) *fcReplay {
	r := &fcReplay{inodes: map[uint32][][]byte{}, ranges: map[uint32][]fcRange{}, dirs: map[uint32][]fcDentry{}}
	le := binary.LittleEndian
	for _, t := range tags {
		v := t.val
		switch t.tag {
		case fcTagInode:
			ino := le.Uint32(v)
			r.inodes[ino] = append(r.inodes[ino], v[4:])
		case fcTagAddRange: // fc_ino, then an ext4_extent
			ino, n := le.Uint32(v), uint64(le.Uint16(v[8:]))
			rg := fcRange{lblk: uint64(le.Uint32(v[4:])), n: n,
				pblk: uint64(le.Uint16(v[10:]))<<32 | uint64(le.Uint32(v[12:]))}
			if n > 32768 {
				rg.n, rg.uninit = n-32768, true
			}
			r.ranges[ino] = append(r.ranges[ino], rg)
		case fcTagDelRange:
			ino := le.Uint32(v)
			r.ranges[ino] = append(r.ranges[ino], fcRange{lblk: uint64(le.Uint32(v[4:])), n: uint64(le.Uint32(v[8:])), del: true})
		case fcTagCreat, fcTagLink, fcTagUnlink:
			parent := le.Uint32(v)
			r.dirs[parent] = append(r.dirs[parent], fcDentry{name: string(v[8:]), ino: le.Uint32(v[4:]), unlink: t.tag == fcTagUnlink})
		}
	}
	return r
}

// patchInode lays the INODE tags of inode ino over its raw on-disk bytes as
// ext4_fc_replay_inode does (everything but i_block, which stays the on-disk extent root,
// reset when it is not one, or is copied for inline data), and stores a fresh checksum.
func (r *fcReplay) patchInode(fs *ext4FS, ino uint32, raw []byte) {
	if r == nil || len(r.inodes[ino]) == 0 {
		return
	}
	le := binary.LittleEndian
	for _, fc := range r.inodes[ino] {
		copy(raw[:0x28], fc)
		copy(raw[0x64:], fc[0x64:])
		switch flags := le.Uint32(raw[0x20:]); {
		case flags&flagExtents != 0 && le.Uint16(raw[0x28:]) != extentMagic:
			clear(raw[0x28:0x34])
			le.PutUint16(raw[0x28:], extentMagic)
			le.PutUint16(raw[0x2C:], 4) // eh_max: four extents in i_block
		case flags&flagInlineData != 0:
			copy(raw[0x28:0x64], fc[0x28:0x64])
		}
	}
	if fs.csums() {
		extra := int64(0)
		if len(raw) > 128 {
			extra = int64(le.Uint16(raw[0x80:]))
		}
		raw[0x7C], raw[0x7D] = 0, 0
		hasHi := len(raw) > 128 && extra >= 4
		if hasHi {
			raw[0x82], raw[0x83] = 0, 0
		}
		c := crc32c(fs.inodeSeed(ino, raw), raw)
		le.PutUint16(raw[0x7C:], uint16(c))
		if hasHi {
			le.PutUint16(raw[0x82:], uint16(c>>16))
		}
	}
}

// patchExtents applies the ADD_RANGE and DEL_RANGE tags of inode ino to its block map
// (sorted by logical block, limited to nblk blocks), as ext4_fc_replay_add_range and
// ext4_fc_replay_del_range map and unmap them: where ranges overlap, the last one wins.
// The cost is O((ranges + extents) log) whatever the overlaps, so that a hostile
// fast-commit area cannot make a block map expensive.
func (r *fcReplay) patchExtents(fs *ext4FS, ino uint32, exts []extent, nblk uint64) ([]extent, error) {
	if r == nil || len(r.ranges[ino]) == 0 {
		return exts, nil
	}
	ops := r.ranges[ino]
	for _, rg := range ops {
		if !rg.del && (rg.pblk == 0 || rg.pblk >= fs.blocks || rg.n > fs.blocks-rg.pblk) {
			return nil, fs.corrupt("ext4 fast-commit range of "+inodeName(ino), fs.inodeAt(ino), "%d+%d outside filesystem", rg.pblk, rg.n)
		}
	}
	pts, last := lastRangeCovering(ops)
	var covered, added []extent
	for i, k := range last {
		if k < 0 {
			continue
		}
		lo, hi := pts[i], pts[i+1]
		if n := len(covered); n > 0 && covered[n-1].lblk+covered[n-1].n == lo {
			covered[n-1].n += hi - lo
		} else {
			covered = append(covered, extent{lblk: lo, n: hi - lo})
		}
		if rg := ops[k]; !rg.del {
			added = append(added, extent{lblk: lo, pblk: rg.pblk + (lo - rg.lblk), n: hi - lo, uninit: rg.uninit})
		}
	}
	out := append(subtractExtents(exts, covered), added...)
	sort.Slice(out, func(i, j int) bool { return out[i].lblk < out[j].lblk })
	clipped := out[:0]
	for _, e := range out {
		if e.lblk < nblk {
			e.n = min(e.n, nblk-e.lblk)
			clipped = append(clipped, e)
		}
	}
	return clipped, nil
}

// lastRangeCovering cuts the logical blocks the ranges touch into segments between their
// sorted end points pts, and returns for segment i (pts[i] to pts[i+1]) the index of the
// last range covering it, or -1. Ranges are painted newest first, each segment once
// (union-find over the next unpainted segment).
func lastRangeCovering(ops []fcRange) (pts []uint64, last []int) {
	for _, rg := range ops {
		pts = append(pts, rg.lblk, rg.lblk+rg.n)
	}
	slices.Sort(pts)
	pts = slices.Compact(pts)
	last = make([]int, len(pts)-1)
	next := make([]int, len(pts))
	for i := range last {
		last[i] = -1
	}
	for i := range next {
		next[i] = i
	}
	find := func(i int) int {
		for next[i] != i {
			next[i] = next[next[i]]
			i = next[i]
		}
		return i
	}
	for k := len(ops) - 1; k >= 0; k-- {
		a, _ := slices.BinarySearch(pts, ops[k].lblk)
		b, _ := slices.BinarySearch(pts, ops[k].lblk+ops[k].n)
		for i := find(a); i < b; i = find(i) {
			last[i], next[i] = k, i+1
		}
	}
	return pts, last
}

// subtractExtents removes the sorted, disjoint logical ranges cut from the sorted
// extents exts.
func subtractExtents(exts, cut []extent) []extent {
	var out []extent
	j := 0
	for _, e := range exts {
		lo, end := e.lblk, e.lblk+e.n
		for j < len(cut) && cut[j].lblk+cut[j].n <= lo {
			j++
		}
		for k := j; lo < end && k < len(cut) && cut[k].lblk < end; k++ {
			if cut[k].lblk > lo {
				out = append(out, extent{lblk: lo, pblk: e.pblk + (lo - e.lblk), n: cut[k].lblk - lo, uninit: e.uninit})
			}
			lo = max(lo, cut[k].lblk+cut[k].n)
		}
		if lo < end {
			out = append(out, extent{lblk: lo, pblk: e.pblk + (lo - e.lblk), n: end - lo, uninit: e.uninit})
		}
	}
	return out
}

// patchDir applies the directory entry tags of directory ino to its entries: a link or
// create adds the name unless it exists (-EEXIST is ignored), an unlink removes it when
// it names the tag's inode.
func (r *fcReplay) patchDir(ino uint32, ents []dirent) []dirent {
	if r == nil || len(r.dirs[ino]) == 0 {
		return ents
	}
	at := make(map[string]int, len(ents)) // name → index in ents of the live entry
	for i, e := range ents {
		if _, dup := at[e.name]; !dup {
			at[e.name] = i
		}
	}
	gone := map[int]bool{}
	for _, d := range r.dirs[ino] {
		i, ok := at[d.name]
		switch {
		case d.unlink && ok && ents[i].ino == d.ino:
			gone[i] = true
			delete(at, d.name)
		case !d.unlink && !ok:
			at[d.name] = len(ents)
			ents = append(ents, dirent{name: d.name, ino: d.ino})
		}
	}
	out := ents[:0]
	for i, e := range ents {
		if !gone[i] {
			out = append(out, e)
		}
	}
	return out
}
