package diskscan

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
)

// Journal replay in memory. A running guest's filesystem is always "needs recovery":
// metadata reaches the journal at each commit (every few seconds) and its home location
// only later. To see what the guest sees, committed transactions are laid over the
// volume when it is read, as e2fsck would replay them, without writing anything.

const (
	compatHasJournal = 0x4
	incompatRecover  = 0x4

	jbdMagic      = 0xC03B3998
	jbdDescriptor = 1
	jbdCommit     = 2
	jbdSuperV1    = 3
	jbdSuperV2    = 4
	jbdRevoke     = 5

	jbdIncompatRevoke     = 0x1
	jbdIncompat64Bit      = 0x2
	jbdIncompatCsumV2     = 0x8
	jbdIncompatCsumV3     = 0x10
	jbdIncompatFastCommit = 0x20

	jbdFlagEscape   = 1
	jbdFlagSameUUID = 2
	jbdFlagLastTag  = 8
)

// journalBlock is where the newest committed copy of a filesystem block sits.
type journalBlock struct {
	off     int64  // volume byte offset of the copy
	escaped bool   // the copy's first 4 bytes were zeroed because they equalled jbdMagic
	descOff int64  // volume byte offset of the descriptor block that announced it
	seq     uint32 // its transaction
}

// overlay reads a volume with replayed journal blocks laid over it.
type overlay struct {
	dev io.ReaderAt
	bs  int64
	m   map[uint64]journalBlock
}

func (v *overlay) ReadAt(p []byte, off int64) (int, error) {
	n, err := v.dev.ReadAt(p, off)
	if n <= 0 {
		return n, err
	}
	var tmp []byte
	for b := off / v.bs; b*v.bs < off+int64(n); b++ {
		jb, ok := v.m[uint64(b)]
		if !ok {
			continue
		}
		if tmp == nil {
			tmp = make([]byte, v.bs)
		}
		if _, rerr := v.dev.ReadAt(tmp, jb.off); rerr != nil {
			return 0, fmt.Errorf("reading journal copy of block %d at %#x: %w", b, jb.off, rerr)
		}
		// The guest keeps writing its journal. jbd2 reuses a transaction's space only
		// after writing its blocks home, and rewrites the descriptor before the data
		// after it; so if the descriptor is still there now, the copy just read was
		// valid, and if not, the home location is current.
		if !v.stillLogged(jb) {
			continue
		}
		if jb.escaped {
			binary.BigEndian.PutUint32(tmp, jbdMagic)
		}
		lo, hi := max(off, b*v.bs), min(off+int64(n), (b+1)*v.bs)
		copy(p[lo-off:hi-off], tmp[lo-b*v.bs:hi-b*v.bs])
	}
	return n, err
}

func (v *overlay) stillLogged(jb journalBlock) bool {
	h := make([]byte, 12)
	if _, err := v.dev.ReadAt(h, jb.descOff); err != nil {
		return false
	}
	be := binary.BigEndian
	return be.Uint32(h) == jbdMagic && be.Uint32(h[4:]) == jbdDescriptor && be.Uint32(h[8:]) == jb.seq
}

// journalTag is one block write of a transaction.
type journalTag struct {
	fsBlock uint64
	jpos    uint64 // journal logical block of the data
	escaped bool
	desc    uint64 // journal logical block of its descriptor
	seq     uint32
}

// replayJournal scans the internal journal from s_start and returns the filesystem
// blocks whose newest committed copies are in it. A clean journal gives an empty map.
func (fs *ext4FS) replayJournal(o *op, jino uint32) (map[uint64]journalBlock, error) {
	in, err := o.readInode(jino)
	if err != nil {
		return nil, fmt.Errorf("journal inode: %w", err)
	}
	exts, err := o.mapBlocks(in)
	if err != nil {
		return nil, fmt.Errorf("journal inode: %w", err)
	}
	jmap := func(l uint64) (int64, error) { // journal logical block → volume offset
		i := sort.Search(len(exts), func(i int) bool { return exts[i].lblk+exts[i].n > l })
		if i == len(exts) || exts[i].lblk > l || exts[i].uninit {
			return 0, fmt.Errorf("journal block %d not mapped: %w", l, ErrCorrupt)
		}
		return int64(exts[i].pblk+l-exts[i].lblk) * fs.bs, nil
	}
	read := func(l uint64) ([]byte, error) {
		off, err := jmap(l)
		if err != nil {
			return nil, err
		}
		b := make([]byte, fs.bs)
		if err := o.read(b, off); err != nil {
			return nil, fmt.Errorf("journal block %d: %w", l, err)
		}
		return b, nil
	}
	be := binary.BigEndian
	sb, err := read(0)
	if err != nil {
		return nil, err
	}
	if be.Uint32(sb) != jbdMagic || (be.Uint32(sb[4:]) != jbdSuperV1 && be.Uint32(sb[4:]) != jbdSuperV2) {
		return nil, fmt.Errorf("journal superblock: bad magic or type: %w", ErrCorrupt)
	}
	if int64(be.Uint32(sb[0xC:])) != fs.bs {
		return nil, fmt.Errorf("journal block size %d: %w", be.Uint32(sb[0xC:]), ErrUnsupportedFS)
	}
	maxlen, first := uint64(be.Uint32(sb[0x10:])), uint64(be.Uint32(sb[0x14:]))
	seq, start := be.Uint32(sb[0x18:]), uint64(be.Uint32(sb[0x1C:]))
	var incompat uint32
	if be.Uint32(sb[4:]) == jbdSuperV2 {
		incompat = be.Uint32(sb[0x28:])
	}
	last := maxlen
	if incompat&jbdIncompatFastCommit != 0 {
		fc := uint64(be.Uint32(sb[0x54:]))
		if fc == 0 {
			fc = 256
		}
		last = maxlen - min(fc, maxlen)
	}
	if start == 0 {
		return nil, nil // clean
	}
	if first == 0 || first >= last || start < first || start >= last || last > uint64(in.size/fs.bs) {
		return nil, fmt.Errorf("journal geometry first %d start %d last %d: %w", first, start, last, ErrCorrupt)
	}
	tagBytes := 12
	switch {
	case incompat&jbdIncompatCsumV3 != 0:
		tagBytes = 16
	case incompat&jbdIncompatCsumV2 != 0:
		tagBytes += 2
	}
	if incompat&jbdIncompatCsumV3 == 0 && incompat&jbdIncompat64Bit == 0 {
		tagBytes -= 4
	}
	descEnd := int(fs.bs)
	if incompat&(jbdIncompatCsumV2|jbdIncompatCsumV3) != 0 {
		descEnd -= 4 // descriptor block tail
	}
	next := func(p uint64) uint64 {
		if p+1 >= last {
			return first
		}
		return p + 1
	}

	var committed []journalTag
	var pending []journalTag
	revoked := map[uint64]uint32{} // block → newest committed revoking transaction
	pendingRevoke := map[uint64]bool{}
	pos := start
	for steps := uint64(0); steps < last; steps++ {
		b, err := read(pos)
		if err != nil {
			return nil, err
		}
		if be.Uint32(b) != jbdMagic || be.Uint32(b[8:]) != seq {
			break // end of the log
		}
		switch be.Uint32(b[4:]) {
		case jbdDescriptor:
			p := pos
			for t := 12; t+tagBytes <= descEnd; {
				var blk uint64
				var flags uint32
				if tagBytes == 16 { // tag3: blocknr, flags (32 bits), blocknr_high, checksum
					blk, flags = uint64(be.Uint32(b[t:])), be.Uint32(b[t+4:])
					if incompat&jbdIncompat64Bit != 0 {
						blk |= uint64(be.Uint32(b[t+8:])) << 32
					}
				} else { // blocknr, checksum (16), flags (16), [blocknr_high]
					blk, flags = uint64(be.Uint32(b[t:])), uint32(be.Uint16(b[t+6:]))
					if tagBytes >= 12 {
						blk |= uint64(be.Uint32(b[t+8:])) << 32
					}
				}
				p = next(p)
				pending = append(pending, journalTag{fsBlock: blk, jpos: p, escaped: flags&jbdFlagEscape != 0, desc: pos, seq: seq})
				t += tagBytes
				if flags&jbdFlagSameUUID == 0 {
					t += 16
				}
				if flags&jbdFlagLastTag != 0 {
					break
				}
				steps++
			}
			pos = next(p)
		case jbdCommit:
			committed = append(committed, pending...)
			for blk := range pendingRevoke {
				revoked[blk] = seq
			}
			pending, pendingRevoke = nil, map[uint64]bool{}
			seq++
			pos = next(pos)
		case jbdRevoke:
			n := int(be.Uint32(b[12:]))
			w := 4
			if incompat&jbdIncompat64Bit != 0 {
				w = 8
			}
			for r := 16; r+w <= min(n, int(fs.bs)); r += w {
				if w == 8 {
					pendingRevoke[be.Uint64(b[r:])] = true
				} else {
					pendingRevoke[uint64(be.Uint32(b[r:]))] = true
				}
			}
			pos = next(pos)
		default:
			steps = last // unknown block type: end of the log
		}
	}
	out := map[uint64]journalBlock{}
	for _, t := range committed {
		if r, ok := revoked[t.fsBlock]; ok && r >= t.seq {
			continue
		}
		if t.fsBlock == 0 || t.fsBlock >= fs.blocks {
			continue // nothing the volume holds
		}
		off, err := jmap(t.jpos)
		if err != nil {
			return nil, err
		}
		descOff, err := jmap(t.desc)
		if err != nil {
			return nil, err
		}
		out[t.fsBlock] = journalBlock{off: off, escaped: t.escaped, descOff: descOff, seq: t.seq}
	}
	return out, nil
}
