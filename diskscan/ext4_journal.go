package diskscan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"sync"
)

// Journal replay in memory. A running guest's filesystem is always "needs recovery":
// metadata reaches the journal at each commit (every few seconds) and its home location
// only later. To see what the guest sees, committed transactions are laid over the
// volume when it is read, as the kernel's jbd2 recovery (fs/jbd2/recovery.c) would
// replay them at mount, without writing anything. ext4_recovery.go has the passes,
// ext4_fastcommit.go the fast commits replayed after them.

const (
	compatHasJournal = 0x4
	compatFastCommit = 0x400
	incompatRecover  = 0x4

	jbdMagic      = 0xC03B3998
	jbdDescriptor = 1
	jbdCommit     = 2
	jbdSuperV1    = 3
	jbdSuperV2    = 4
	jbdRevoke     = 5

	jbdCompatChecksum = 0x1

	jbdIncompatRevoke      = 0x1
	jbdIncompat64Bit       = 0x2
	jbdIncompatAsyncCommit = 0x4
	jbdIncompatCsumV2      = 0x8
	jbdIncompatCsumV3      = 0x10
	jbdIncompatFastCommit  = 0x20
	jbdKnownIncompat       = 0x3F

	jbdCRC32C           = 4 // s_checksum_type for csum v2/v3
	jbdMinJournalBlocks = 1024
	jbdDefaultFCBlocks  = 256

	jbdFlagEscape   = 1
	jbdFlagSameUUID = 2
	jbdFlagLastTag  = 8
)

// ErrJournal matches the error JournalError returns: the filesystem's journal is not
// applied as the guest's kernel would apply it at mount. Either the kernel would refuse
// it (a corrupt journal inode, superblock, log or fast-commit area: bad checksums,
// impossible geometry, an invalid revoke block; the mount fails and e2fsck must run) or
// it is an external journal, which this package does not read. The volume is then read
// as e2fsck leaves it after its own replay (the transactions before the damage, the data
// blocks whose checksums hold; through the superblock's copy of the journal inode's
// block map when the inode is unusable), or as it is on disk.
var ErrJournal = errors.New("journal not replayed as the kernel would")

// JournalError says why fs is not read with its journal applied as the guest's kernel
// would apply it (an error matching ErrJournal), or returns nil. A guest can corrupt its
// own journal on purpose, so callers should surface it: what they read may not be what
// the guest's kernel reads.
func JournalError(fs FS) error {
	if e, ok := fs.(*ext4FS); ok {
		return e.journalErr
	}
	return nil
}

// journalBlock is where the newest committed copy of a filesystem block sits.
type journalBlock struct {
	off     int64  // volume byte offset of the copy
	escaped bool   // the copy's first 4 bytes were zeroed because they equalled jbdMagic
	descOff int64  // volume byte offset of the descriptor block that announced it
	seq     uint32 // its transaction
}

// openJournal replays the internal journal of a filesystem that needs recovery and lays
// the result over the volume. sb is the ext4 superblock. The returned error (matching
// ErrJournal) does not stop the filesystem from being read: it is what JournalError
// reports.
func (fs *ext4FS) openJournal(sb []byte) error {
	le := binary.LittleEndian
	compat, jino, jdev := le.Uint32(sb[0x5C:]), le.Uint32(sb[0xE0:]), le.Uint32(sb[0xE4:])
	if compat&compatHasJournal == 0 || fs.incompat&incompatRecover == 0 {
		return nil
	}
	switch {
	case jino != 0 && jdev != 0:
		return fmt.Errorf("ext4 superblock names both journal inode %d and journal device %#x: %w", jino, jdev, ErrJournal)
	case jino == 0:
		return fmt.Errorf("external journal (device %#x) not replayed: %w", jdev, ErrJournal)
	}
	// A checksum mismatch may be a read torn by the guest writing its journal: try once
	// more with fresh reads before reporting it.
	m, fc, err := fs.recoverJournal(jino, sb, false)
	if err != nil {
		m, fc, err = fs.recoverJournal(jino, sb, true)
	}
	if len(fc) > 0 {
		fs.fc = newFCReplay(fc)
	}
	if len(m) > 0 {
		ov := &overlay{dev: fs.dev, bs: fs.bs, m: m}
		fs.dev, fs.ov = ov, ov
		fs.cache = newChunkCache(ov, int64(fs.blocks)*fs.bs, metaChunkSize, metaCacheBytes/metaChunkSize)
		fs.journalBlocks = len(m)
	}
	if err != nil {
		return fmt.Errorf("journal (inode %d): %w", jino, err)
	}
	return nil
}

// journal is an internal jbd2 journal: its superblock, checked as the kernel's
// journal_check_superblock does, and the map of its blocks.
type journal struct {
	fs    *ext4FS
	fresh bool
	exts  []extent
	o     *op // the current pass's reads

	maxlen, first, last uint64 // log blocks [first, last); the fast-commit area follows
	seq, start          uint32
	compat, incompat    uint32
	seed                uint32 // crc32c(~0, journal UUID)
	inodeErr            error  // the journal inode was unusable: its superblock copy is used
}

// loadJournal reads and checks the journal superblock of inode jino.
// fsSB is the ext4 superblock, for the copy of the journal inode's block map it keeps;
// nil when there is none to fall back on.
func (fs *ext4FS) loadJournal(jino uint32, fsSB []byte, fresh bool) (*journal, error) {
	o := fs.newOp(fresh)
	in, err := o.journalInode(jino)
	var exts []extent
	if err == nil {
		exts, err = o.mapBlocks(in)
	}
	var inodeErr error
	if err != nil {
		// e2fsck then uses the superblock's copy of the journal's block map; the kernel
		// refuses the journal.
		inodeErr = fmt.Errorf("journal inode %d unusable (%v), replayed through the superblock's copy of its block map as e2fsck does: %w", jino, err, ErrJournal)
		if in, err = o.fs.backupJournalInode(jino, fsSB); err == nil {
			exts, err = o.mapBlocks(in)
		}
		if err != nil {
			return nil, fmt.Errorf("journal inode %d: %v: %w", jino, err, ErrJournal)
		}
	}
	j := &journal{fs: fs, fresh: fresh, exts: exts, o: o, maxlen: uint64(in.size / fs.bs), inodeErr: inodeErr}
	sb, err := j.block(0)
	if err != nil {
		return nil, fmt.Errorf("journal superblock: %w", err)
	}
	if err := j.parseSuper(sb); err != nil {
		return nil, fmt.Errorf("journal superblock: %w", err)
	}
	return j, nil
}

// journalInode reads the journal inode and checks it as e2fsck does before trusting it:
// a regular file, linked, of at least 1024 blocks.
func (o *op) journalInode(jino uint32) (*inode, error) {
	in, err := o.readInode(jino)
	switch {
	case err != nil:
		return nil, err
	case in.fileType() != Regular || in.links == 0:
		return nil, o.fs.corrupt("ext4 journal "+inodeName(jino), in.off, "not a linked regular file")
	case in.size/o.fs.bs < jbdMinJournalBlocks:
		return nil, o.fs.corrupt("ext4 journal "+inodeName(jino), in.off+0x4, "%d bytes: too small for a journal", in.size)
	}
	return in, nil
}

// backupJournalInode makes a journal inode from the ext4 superblock's copy of its block
// map (s_jnl_blocks: i_block, then the size's high and low words), as e2fsck does; the
// extents flag is set when the copy holds an extent tree root.
func (fs *ext4FS) backupJournalInode(jino uint32, sb []byte) (*inode, error) {
	const jnlBackupBlocks = 1
	if sb == nil || sb[0xFD] != jnlBackupBlocks {
		return nil, fs.corrupt("ext4 superblock", superblockOff+0xFD, "no copy of the journal's block map")
	}
	le := binary.LittleEndian
	raw := make([]byte, 128)
	copy(raw[0x28:0x64], sb[0x10C:0x148])
	size := uint64(le.Uint32(sb[0x148:]))<<32 | uint64(le.Uint32(sb[0x14C:]))
	in := &inode{ino: jino, off: superblockOff + 0x10C - 0x28, raw: raw, mode: 0x8000 | 0o600, links: 1, size: int64(size & (1<<62 - 1)), iblock: raw[0x28:0x64]}
	if le.Uint16(raw[0x28:]) == extentMagic {
		in.flags = flagExtents
	}
	return in, nil
}

// parseSuper checks the journal superblock as jbd2 does before it recovers anything.
func (j *journal) parseSuper(sb []byte) error {
	be := binary.BigEndian
	if be.Uint32(sb) != jbdMagic || int64(be.Uint32(sb[0xC:])) != j.fs.bs {
		return fmt.Errorf("bad magic %#x or block size %d: %w", be.Uint32(sb), be.Uint32(sb[0xC:]), ErrJournal)
	}
	if v := be.Uint32(sb[4:]); v != jbdSuperV1 && v != jbdSuperV2 {
		return fmt.Errorf("unknown format %d: %w", v, ErrJournal)
	}
	total := j.maxlen
	j.maxlen, j.first = uint64(be.Uint32(sb[0x10:])), uint64(be.Uint32(sb[0x14:]))
	j.seq, j.start = be.Uint32(sb[0x18:]), be.Uint32(sb[0x1C:])
	if j.maxlen > total {
		return fmt.Errorf("%d blocks in a journal file of %d: %w", j.maxlen, total, ErrJournal)
	}
	if j.first == 0 || j.first >= total {
		return fmt.Errorf("first log block %d of %d: %w", j.first, total, ErrJournal)
	}
	j.last = j.maxlen
	if be.Uint32(sb[4:]) == jbdSuperV1 {
		return nil
	}
	j.compat, j.incompat = be.Uint32(sb[0x24:]), be.Uint32(sb[0x28:])
	if ro := be.Uint32(sb[0x2C:]); ro != 0 || j.incompat&^jbdKnownIncompat != 0 {
		return fmt.Errorf("unknown features (incompat %#x, ro_compat %#x): %w", j.incompat, ro, ErrJournal)
	}
	if err := j.fastCommitArea(sb); err != nil {
		return err
	}
	return j.checkCsumSuper(sb)
}

// fastCommitArea sets the end of the log when the last blocks are for fast commits.
func (j *journal) fastCommitArea(sb []byte) error {
	fc := uint64(0)
	if j.incompat&jbdIncompatFastCommit != 0 {
		if fc = uint64(binary.BigEndian.Uint32(sb[0x54:])); fc == 0 {
			fc = jbdDefaultFCBlocks
		}
	}
	if j.maxlen < jbdMinJournalBlocks || j.maxlen-jbdMinJournalBlocks < fc {
		return fmt.Errorf("%d blocks with %d for fast commits: too short: %w", j.maxlen, fc, ErrJournal)
	}
	j.last = j.maxlen - fc
	if j.first >= j.last {
		return fmt.Errorf("first log block %d beyond the log's end %d: %w", j.first, j.last, ErrJournal)
	}
	return nil
}

// checkCsumSuper checks the checksum features and, with csum v2/v3, the superblock's own
// checksum, and sets the seed of the log's checksums.
func (j *journal) checkCsumSuper(sb []byte) error {
	v2, v3 := j.incompat&jbdIncompatCsumV2 != 0, j.incompat&jbdIncompatCsumV3 != 0
	switch {
	case v2 && v3:
		return fmt.Errorf("checksum v2 and v3 both set: %w", ErrJournal)
	case (v2 || v3) && j.compat&jbdCompatChecksum != 0:
		return fmt.Errorf("checksum v1 and v2/v3 both set: %w", ErrJournal)
	case !v2 && !v3:
		return nil
	}
	if sb[0x50] != jbdCRC32C {
		return fmt.Errorf("checksum type %d: %w", sb[0x50], ErrJournal)
	}
	c := make([]byte, 1024)
	copy(c, sb)
	clear(c[0xFC:0x100])
	if got, want := crc32c(^uint32(0), c), binary.BigEndian.Uint32(sb[0xFC:]); got != want {
		return fmt.Errorf("superblock checksum %#x, computed %#x: %w", want, got, ErrJournal)
	}
	j.seed = crc32c(^uint32(0), sb[0x30:0x40])
	return nil
}

func (j *journal) csumV23() bool {
	return j.incompat&(jbdIncompatCsumV2|jbdIncompatCsumV3) != 0
}

// tagBytes is the size of a descriptor tag (journal_tag_bytes), without the UUID.
func (j *journal) tagBytes() int {
	switch {
	case j.incompat&jbdIncompatCsumV3 != 0:
		return 16
	case j.incompat&jbdIncompatCsumV2 != 0 && j.incompat&jbdIncompat64Bit != 0:
		return 14
	case j.incompat&jbdIncompatCsumV2 != 0:
		return 10
	case j.incompat&jbdIncompat64Bit != 0:
		return 12
	}
	return 8
}

// offset maps journal block l to a volume byte offset (jread: a block beyond s_maxlen
// means a corrupt journal).
func (j *journal) offset(l uint64) (int64, error) {
	if l >= j.maxlen {
		return 0, fmt.Errorf("journal block %d beyond its %d blocks: %w", l, j.maxlen, ErrJournal)
	}
	exts := j.exts
	i := sort.Search(len(exts), func(i int) bool { return exts[i].lblk+exts[i].n > l })
	if i == len(exts) || exts[i].lblk > l || exts[i].uninit {
		return 0, fmt.Errorf("journal block %d not mapped: %w", l, ErrJournal)
	}
	return int64(exts[i].pblk+l-exts[i].lblk) * j.fs.bs, nil
}

// block reads journal block l (jread: beyond s_maxlen is corruption).
func (j *journal) block(l uint64) ([]byte, error) {
	off, err := j.offset(l)
	if err != nil {
		return nil, err
	}
	b := make([]byte, j.fs.bs)
	if err := j.o.read(b, off); err != nil {
		return nil, fmt.Errorf("journal block %d: %v: %w", l, err, ErrJournal)
	}
	return b, nil
}

// wrap is the kernel's wrap(): a log position past the end of the log restarts at first.
func (j *journal) wrap(p uint64) uint64 {
	if p >= j.last {
		p -= j.last - j.first
	}
	return p
}

// overlay reads a volume with replayed journal blocks laid over it.
type overlay struct {
	dev io.ReaderAt
	bs  int64
	m   map[uint64]journalBlock

	sortOnce sync.Once
	sorted   []uint64 // the keys of m, sorted (covers)
}

// covers reports whether any block of [lo, lo+n) has a journal copy laid over it.
func (v *overlay) covers(lo, n uint64) bool {
	v.sortOnce.Do(func() {
		v.sorted = slices.Sorted(maps.Keys(v.m))
	})
	i, _ := slices.BinarySearch(v.sorted, lo)
	return i < len(v.sorted) && v.sorted[i]-lo < n
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
