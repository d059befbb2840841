package diskscan

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sync/atomic"

	"github.com/domainm/domainm/internal/mmap"
)

// ext4 superblock feature bits this reader looks at.
const (
	incompatCompression = 0x1
	incompatFiletype    = 0x2
	incompatJournalDev  = 0x8
	incompatMetaBG      = 0x10
	incompat64Bit       = 0x80
	incompatDirData     = 0x1000
	incompatInlineData  = 0x8000

	roCompatSparseSuper  = 0x1
	roCompatMetadataCsum = 0x400

	ext4Magic      = 0xEF53
	superblockOff  = 1024
	rootIno        = 2
	maxBlockSize   = 64 << 10
	metaChunkSize  = 64 << 10
	metaCacheBytes = 32 << 20
)

// ext4FS is a read-only ext2/3/4 filesystem on a volume. Its methods are safe for
// concurrent use: all state after opening is immutable except the locked cache.
type ext4FS struct {
	dev     io.ReaderAt
	base    int64 // where the volume starts in the disk image (CorruptError.Offset)
	devSize int64
	cache   *chunkCache

	bs             int64
	blocks         uint64 // usable blocks: min(superblock count, volume size / bs)
	firstDataBlock uint64
	blocksPerGroup uint64
	inodesPerGroup uint64
	inodesCount    uint64
	groups         uint64
	inodeSize      int64
	descSize       int64
	firstMetaBG    uint64
	incompat       uint32
	roCompat       uint32
	csumSeed       uint32

	dirs dirCache
	// mapWork is the shared pool of metadata work (extent-tree, indirect and directory
	// blocks read, extents produced) that operations draw on beyond their own allowance
	// (opWorkFree), over the FS's lifetime; see op.spend.
	mapWork atomic.Int64
	// opWorkFree is each operation's own allowance of work units (opWorkAllowance;
	// tests lower it).
	opWorkFree int64
	// journalBlocks is how many blocks are read from the journal instead of their home.
	journalBlocks int
	// journalErr is why the journal is not applied as the kernel would (JournalError).
	journalErr error
	// fc is the effect of replayed fast commits (nil: none).
	fc *fcReplay
	// retryWait is the time spent waiting before retries (nanoseconds), capped.
	retryWait atomic.Int64
	// retries is how inconsistent reads are retried (the package's retries at opening).
	retries retryPolicy
	// mem is the read-only mapping of the raw image file the volume lies in (nil when it
	// is not one): file contents are hashed from it (file.WriteTo). Volume bytes
	// [0, memLimit) are mem's bytes from memBase.
	mem               *mmap.Mapping
	memBase, memLimit int64
	memRead           atomic.Int64 // bytes read from mem since its pages were released
	// resident marks, per residentRegion bytes of the volume in mem, the regions where
	// file contents were found missing from the page cache (see readsMapped): an entry
	// equal to residentEpoch, which each walk advances, was marked in this walk.
	resident      []atomic.Uint32
	residentShift uint
	residentEpoch atomic.Uint32
	// walkPreads is set when the last walk began on a mostly uncached image (see
	// startWalk): that walk reads all file contents with preads.
	walkPreads atomic.Bool
	// usedFraction is the share of the volume's blocks in use, from the superblock's
	// free block count (1 when it is not credible).
	usedFraction float64
	// bytesMapped and bytesRead count the file content bytes WriteTo took from mem and
	// read with preads (holes and inline data not counted).
	bytesMapped, bytesRead atomic.Int64
	// ov is the replayed journal laid over the volume (nil when none): blocks it holds
	// are read through dev, not from mem.
	ov *overlay
}

// mapWorkLimit is the shared pool: it allows several passes over a healthy filesystem
// even if every operation needed more than its allowance.
func (fs *ext4FS) mapWorkLimit() int64 { return 8*int64(fs.blocks) + 1<<20 }

// opWorkAllowance is the work one operation may do without drawing on the shared pool:
// a directory of 4096 blocks (16 MiB with 4 KiB blocks, some 100,000 names) or a file of
// 4096 extents. It bounds what one hostile inode costs once the pool is dry.
const opWorkAllowance = 4096

var _ FS = (*ext4FS)(nil)

// openExt4 reads and validates the superblock.
func openExt4(r io.ReaderAt, size int64) (*ext4FS, error) {
	sb := make([]byte, 1024)
	if size < superblockOff+1024 {
		return nil, fmt.Errorf("volume of %d bytes too small for ext4: %w", size, ErrUnsupportedFS)
	}
	if _, err := r.ReadAt(sb, superblockOff); err != nil {
		return nil, fmt.Errorf("reading ext4 superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != ext4Magic {
		return nil, fmt.Errorf("no ext2/3/4 superblock magic: %w", ErrUnsupportedFS)
	}
	fs := &ext4FS{dev: r, devSize: size, base: sectionBase(r), opWorkFree: opWorkAllowance, retries: retries}
	fs.mem, fs.memBase, fs.memLimit = mappedVolume(r)
	if fs.mem != nil {
		fs.residentShift = residentRegionShift
		for fs.memLimit>>fs.residentShift >= maxResidentRegions {
			fs.residentShift++
		}
		fs.resident = make([]atomic.Uint32, fs.memLimit>>fs.residentShift+1)
		fs.residentEpoch.Store(1)
	}
	logBS := le.Uint32(sb[0x18:])
	if logBS > 6 {
		return nil, fs.corrupt("ext4 superblock", superblockOff+0x18, "block size 1024<<%d", logBS)
	}
	fs.bs = 1024 << logBS
	fs.incompat = le.Uint32(sb[0x60:])
	fs.roCompat = le.Uint32(sb[0x64:])
	if fs.incompat&(incompatCompression|incompatJournalDev|incompatDirData) != 0 {
		return nil, fmt.Errorf("ext4 incompatible features %#x: %w", fs.incompat, ErrUnsupportedFS)
	}
	fs.blocks = uint64(le.Uint32(sb[0x4:]))
	if fs.incompat&incompat64Bit != 0 {
		fs.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		fs.descSize = int64(le.Uint16(sb[0xFE:]))
		if fs.descSize < 32 || fs.descSize > fs.bs || fs.descSize&(fs.descSize-1) != 0 {
			return nil, fs.corrupt("ext4 superblock", superblockOff+0xFE, "group descriptor size %d", fs.descSize)
		}
	} else {
		fs.descSize = 32
	}
	fs.firstDataBlock = uint64(le.Uint32(sb[0x14:]))
	fs.blocksPerGroup = uint64(le.Uint32(sb[0x20:]))
	fs.inodesPerGroup = uint64(le.Uint32(sb[0x28:]))
	fs.inodesCount = uint64(le.Uint32(sb[0x0:]))
	fs.firstMetaBG = uint64(le.Uint32(sb[0x104:]))
	fs.inodeSize = 128
	if le.Uint32(sb[0x4C:]) >= 1 { // dynamic revision
		fs.inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	switch {
	case fs.inodeSize < 128 || fs.inodeSize > fs.bs || fs.inodeSize&(fs.inodeSize-1) != 0:
		return nil, fs.corrupt("ext4 superblock", superblockOff+0x58, "inode size %d", fs.inodeSize)
	case fs.blocksPerGroup == 0 || fs.blocksPerGroup > 1<<31:
		return nil, fs.corrupt("ext4 superblock", superblockOff+0x20, "%d blocks per group", fs.blocksPerGroup)
	case fs.inodesPerGroup == 0 || uint64(fs.inodesPerGroup) > uint64(fs.bs)*8:
		return nil, fs.corrupt("ext4 superblock", superblockOff+0x28, "%d inodes per group", fs.inodesPerGroup)
	case fs.firstDataBlock >= fs.blocks:
		return nil, fs.corrupt("ext4 superblock", superblockOff+0x14, "first data block %d of %d", fs.firstDataBlock, fs.blocks)
	}
	fs.groups = (fs.blocks - fs.firstDataBlock + fs.blocksPerGroup - 1) / fs.blocksPerGroup
	if fs.inodesCount > fs.groups*fs.inodesPerGroup || fs.inodesCount < rootIno {
		return nil, fs.corrupt("ext4 superblock", superblockOff, "%d inodes in %d groups of %d",
			fs.inodesCount, fs.groups, fs.inodesPerGroup)
	}
	fs.csumSeed = csumSeedFrom(sb, fs.incompat)
	fs.usedFraction = 1
	if total := fs.blocks; total > 0 {
		free := uint64(le.Uint32(sb[0x0C:]))
		if fs.incompat&incompat64Bit != 0 {
			free |= uint64(le.Uint32(sb[0x158:])) << 32
		}
		if free < total {
			fs.usedFraction = 1 - float64(free)/float64(total)
		}
	}
	// Block numbers beyond the volume cannot be read; treat them like out-of-range ones.
	fs.blocks = min(fs.blocks, uint64(size/fs.bs))
	fs.cache = newChunkCache(r, int64(fs.blocks)*fs.bs, metaChunkSize, metaCacheBytes/metaChunkSize)
	// A journal the kernel would refuse is still read as e2fsck replays it; JournalError
	// reports it.
	fs.journalErr = fs.openJournal(sb)
	return fs, nil
}

// op carries the state of one metadata operation (one path lookup, one directory
// listing, one attempt of either): whether to bypass the cache (a retry after
// inconsistent metadata) and the work budgets that bound what a hostile image can make
// one operation read.
type op struct {
	fs     *ext4FS
	fresh  bool
	budget int   // metadata reads left
	work   int64 // units of mapping and directory work done (see spend)
}

const opBudget = 1 << 18 // metadata reads per operation

func (fs *ext4FS) newOp(fresh bool) *op {
	return &op{fs: fs, fresh: fresh, budget: opBudget}
}

// read reads metadata bytes at a volume offset: through the cache, or for a fresh
// operation straight from the volume (only the bytes asked for, so that retrying a
// persistently corrupt inode costs one small read), dropping cached chunks that turn
// out to be stale.
func (o *op) read(p []byte, off int64) error {
	o.budget--
	if o.budget < 0 {
		return o.fs.corrupt("ext4 metadata", off, "read budget exhausted")
	}
	c := o.fs.cache
	if off < 0 || int64(len(p)) > c.size || off > c.size-int64(len(p)) {
		return o.fs.corrupt("ext4 metadata", off, "reading %#x bytes: outside volume (%#x bytes)", len(p), c.size)
	}
	if !o.fresh {
		return c.read(p, off)
	}
	if _, err := c.r.ReadAt(p, off); err != nil {
		return fmt.Errorf("reading %#x+%#x: %w", off, len(p), err)
	}
	c.dropIfStale(p, off)
	return nil
}

// block returns a copy of filesystem block n; ref is the volume offset of the structure
// that names it (for errors).
func (o *op) block(n uint64, ref int64) ([]byte, error) {
	if n >= o.fs.blocks || (n < o.fs.firstDataBlock && n != 0) {
		return nil, o.fs.corrupt("ext4 block pointer", ref, "block %d outside filesystem (%d blocks)", n, o.fs.blocks)
	}
	if n == 0 {
		return nil, o.fs.corrupt("ext4 block pointer", ref, "block 0 referenced as data")
	}
	b := make([]byte, o.fs.bs)
	return b, o.read(b, int64(n)*o.fs.bs)
}

// hasSuper reports whether group g holds a superblock backup (sparse_super: 0, 1 and
// powers of 3, 5 and 7).
func (fs *ext4FS) hasSuper(g uint64) bool {
	if fs.roCompat&roCompatSparseSuper == 0 || g <= 1 {
		return true
	}
	for _, p := range []uint64{3, 5, 7} {
		n := p
		for n < g {
			n *= p
		}
		if n == g {
			return true
		}
	}
	return false
}

// inodeTable returns the first block of group g's inode table.
func (o *op) inodeTable(g uint64) (uint64, error) {
	fs := o.fs
	perBlock := uint64(fs.bs / fs.descSize)
	descBlock := g / perBlock
	var blk uint64
	if fs.incompat&incompatMetaBG == 0 || descBlock < fs.firstMetaBG {
		// Right after the block holding the superblock (byte 1024): block 2 with 1 KiB
		// blocks (even when s_first_data_block is 0, as with bigalloc), else block 1.
		blk = uint64(superblockOff/fs.bs) + 1 + descBlock
	} else {
		first := descBlock * perBlock // first group of this meta group holds its descriptors
		blk = fs.firstDataBlock + first*fs.blocksPerGroup
		if fs.hasSuper(first) {
			blk++
		}
		if fs.bs == 1024 && descBlock == 0 && fs.firstDataBlock == 0 {
			blk++ // the superblock sits in block 1, not block 0
		}
	}
	if blk >= fs.blocks {
		return 0, fs.corrupt("ext4 superblock", superblockOff, "group descriptor of group %d at block %d outside filesystem", g, blk)
	}
	d := make([]byte, fs.descSize)
	off := int64(blk)*fs.bs + int64(g%perBlock)*fs.descSize
	if err := o.read(d, off); err != nil {
		return 0, fmt.Errorf("reading group descriptor %d: %w", g, err)
	}
	t := uint64(binary.LittleEndian.Uint32(d[0x8:]))
	if fs.descSize >= 64 {
		t |= uint64(binary.LittleEndian.Uint32(d[0x28:])) << 32
	}
	tableBlocks := (fs.inodesPerGroup*uint64(fs.inodeSize) + uint64(fs.bs) - 1) / uint64(fs.bs)
	if t == 0 || t >= fs.blocks || tableBlocks > fs.blocks-t {
		return 0, fs.corrupt(fmt.Sprintf("ext4 group descriptor %d", g), off+0x8, "inode table at block %d outside filesystem", t)
	}
	return t, nil
}

// corrupt makes a *CorruptError at volume offset off.
func (fs *ext4FS) corrupt(structure string, off int64, format string, args ...any) error {
	return corruptf(structure, fs.base+off, format, args...)
}

// sectionBase is where r starts in the reader it is a section of (io.SectionReader,
// nested), so that errors name offsets in the disk image rather than in a partition.
func sectionBase(r io.ReaderAt) int64 {
	var base int64
	for {
		s, ok := r.(*io.SectionReader)
		if !ok {
			return base
		}
		var off int64
		r, off, _ = s.Outer()
		base += off
	}
}

// mappedVolume finds the mapping of the raw image file under r (through nested
// io.SectionReaders): the mapping, the image offset of r's byte 0, and how many bytes of
// r the mapping serves (bounded by every section's end and the mapping's length). It
// returns a nil mapping when r is not a mapped raw image.
func mappedVolume(r io.ReaderAt) (m *mmap.Mapping, base, limit int64) {
	limit = math.MaxInt64
	for {
		s, ok := r.(*io.SectionReader)
		if !ok {
			break
		}
		var off, n int64
		r, off, n = s.Outer()
		// Volume byte x is byte base+x of this section, which holds n bytes, from off
		// of the reader it is a section of.
		limit = min(limit, n-base)
		base += off
		if off < 0 || base < 0 || limit <= 0 {
			return nil, 0, 0
		}
	}
	im, ok := r.(interface{ mapping() *mmap.Mapping })
	if !ok || im.mapping() == nil {
		return nil, 0, 0
	}
	m = im.mapping()
	mlen := int64(len(m.Bytes()))
	if base >= mlen {
		return nil, 0, 0
	}
	return m, base, min(limit, mlen-base)
}

// inodeAt is the volume offset of inode ino, for errors about it found after it was
// read; the superblock's when the inode table cannot be found.
func (fs *ext4FS) inodeAt(ino uint32) int64 {
	if ino < 1 || uint64(ino) > fs.inodesCount {
		return superblockOff
	}
	g := uint64(ino-1) / fs.inodesPerGroup
	t, err := fs.newOp(false).inodeTable(g)
	if err != nil {
		return superblockOff
	}
	return int64(t)*fs.bs + int64(uint64(ino-1)%fs.inodesPerGroup)*fs.inodeSize
}
