package diskscan

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Inode flags.
const (
	flagIndex      = 0x1000
	flagEAInode    = 0x200000
	flagExtents    = 0x80000
	flagInlineData = 0x10000000
)

// inode is a parsed on-disk inode.
type inode struct {
	ino     uint32
	off     int64  // volume offset of the on-disk inode (for errors)
	raw     []byte // the whole on-disk inode (inodeSize bytes)
	mode    uint16
	uid     uint32
	gid     uint32
	size    int64
	flags   uint32
	links   uint16
	fileACL uint64
	extra   int64 // i_extra_isize
	iblock  []byte
}

func (in *inode) fileType() FileType {
	switch in.mode & 0xF000 {
	case 0x8000:
		return Regular
	case 0x4000:
		return Dir
	case 0xA000:
		return Symlink
	case 0x2000:
		return CharDev
	case 0x6000:
		return BlockDev
	case 0x1000:
		return FIFO
	case 0xC000:
		return Socket
	}
	return Unknown
}

// readInode reads and parses inode number ino.
func (o *op) readInode(ino uint32) (*inode, error) {
	fs := o.fs
	if ino < 1 || uint64(ino) > fs.inodesCount {
		return nil, fs.corrupt("ext4 superblock", superblockOff, "inode %d out of range (1..%d)", ino, fs.inodesCount)
	}
	g := uint64(ino-1) / fs.inodesPerGroup
	idx := uint64(ino-1) % fs.inodesPerGroup
	table, err := o.inodeTable(g)
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", ino, err)
	}
	raw := make([]byte, fs.inodeSize)
	off := int64(table)*fs.bs + int64(idx)*fs.inodeSize
	if err := o.read(raw, off); err != nil {
		return nil, fmt.Errorf("reading inode %d at %#x: %w", ino, off, err)
	}
	fs.fc.patchInode(fs, ino, raw) // replayed fast commits
	le := binary.LittleEndian
	in := &inode{
		ino:     ino,
		off:     off,
		raw:     raw,
		mode:    le.Uint16(raw[0x0:]),
		uid:     uint32(le.Uint16(raw[0x2:])) | uint32(le.Uint16(raw[0x78:]))<<16,
		gid:     uint32(le.Uint16(raw[0x18:])) | uint32(le.Uint16(raw[0x7A:]))<<16,
		links:   le.Uint16(raw[0x1A:]),
		flags:   le.Uint32(raw[0x20:]),
		fileACL: uint64(le.Uint32(raw[0x68:])) | uint64(le.Uint16(raw[0x76:]))<<32,
		iblock:  raw[0x28:0x64],
	}
	size := uint64(le.Uint32(raw[0x4:])) | uint64(le.Uint32(raw[0x6C:]))<<32
	if size > 1<<62 {
		return nil, fs.corrupt(inodeName(ino), off+0x4, "size %d", size)
	}
	in.size = int64(size)
	if fs.inodeSize > 128 {
		in.extra = int64(le.Uint16(raw[0x80:]))
		if in.extra%4 != 0 || 128+in.extra > fs.inodeSize {
			return nil, fs.corrupt(inodeName(ino), off+0x80, "extra size %d", in.extra)
		}
	}
	if err := fs.verifyInode(ino, raw, in.extra, off); err != nil {
		return nil, err
	}
	if in.mode == 0 && in.links == 0 {
		return nil, fs.corrupt(inodeName(ino), off, "free")
	}
	if in.fileType() == Unknown {
		return nil, fs.corrupt(inodeName(ino), off, "mode %#o", in.mode)
	}
	return in, nil
}

// timestamp decodes a 32-bit seconds field and its optional *_extra field (epoch bits
// and nanoseconds), present when the inode's extra size covers it.
func (in *inode) timestamp(secOff, extraOff int) time.Time {
	le := binary.LittleEndian
	sec := int64(int32(le.Uint32(in.raw[secOff:])))
	var nsec int64
	if int64(extraOff)+4 <= 128+in.extra {
		x := le.Uint32(in.raw[extraOff:])
		sec += int64(x&3) << 32
		nsec = int64(x >> 2)
		if nsec > 999999999 {
			nsec = 0
		}
	}
	return time.Unix(sec, nsec).UTC()
}

// entry builds the Entry of an inode: metadata, symlink target and xattrs.
func (o *op) entry(in *inode, path string) (*Entry, error) {
	e := &Entry{
		Path:  path,
		Type:  in.fileType(),
		Mode:  uint32(in.mode) & 0o7777,
		UID:   in.uid,
		GID:   in.gid,
		Size:  in.size,
		Mtime: in.timestamp(0x10, 0x88),
		Ctime: in.timestamp(0x0C, 0x84),
		Inode: uint64(in.ino),
		Nlink: uint32(in.links),
	}
	x, err := o.xattrs(in)
	if err != nil {
		return nil, err
	}
	if e.Type == Symlink {
		// Before system.data is dropped: an inline-data symlink's target continues there.
		t, err := o.symlinkTarget(in, x)
		if err != nil {
			return nil, err
		}
		e.LinkTarget = t
	}
	delete(x, "system.data") // inline contents, not an attribute
	if len(x) > 0 {
		e.Xattrs = x
	}
	return e, nil
}

const maxSymlink = 4096

func (o *op) symlinkTarget(in *inode, x map[string][]byte) (string, error) {
	if in.size > maxSymlink || in.size == 0 {
		return "", o.fs.corrupt("ext4 symlink "+inodeName(in.ino), in.off+0x4, "target length %d", in.size)
	}
	if in.flags&flagInlineData != 0 {
		b, err := o.fs.inlineData(in, x)
		return string(b), err
	}
	if in.size < int64(len(in.iblock)) && in.flags&flagExtents == 0 {
		return string(in.iblock[:in.size]), nil // fast symlink
	}
	b, err := o.readSmall(in, maxSymlink)
	return string(b), err
}

// inlineData returns the contents of an inline-data inode: i_block, then system.data.
func (fs *ext4FS) inlineData(in *inode, x map[string][]byte) ([]byte, error) {
	b := append(append([]byte(nil), in.iblock...), x["system.data"]...)
	if in.size > int64(len(b)) {
		return nil, fs.corrupt("ext4 inline "+inodeName(in.ino), in.off+0x4, "size %d exceeds inline data %d", in.size, len(b))
	}
	return b[:in.size], nil
}

// readSmall reads the whole contents of a small block-mapped inode (slow symlinks, EA
// inodes) through the metadata cache.
func (o *op) readSmall(in *inode, limit int64) ([]byte, error) {
	if in.size > limit {
		return nil, o.fs.corrupt(inodeName(in.ino), in.off+0x4, "size %d over %d", in.size, limit)
	}
	if in.flags&flagInlineData != 0 {
		x, err := o.xattrs(in)
		if err != nil {
			return nil, err
		}
		return o.fs.inlineData(in, x)
	}
	exts, err := o.mapBlocks(in)
	if err != nil {
		return nil, err
	}
	out := make([]byte, in.size)
	bs := o.fs.bs
	for _, e := range exts {
		if e.uninit {
			continue
		}
		for i := uint64(0); i < e.n; i++ {
			pos := int64(e.lblk+i) * bs
			if pos >= in.size {
				break
			}
			if err := o.read(out[pos:min(pos+bs, in.size)], int64(e.pblk+i)*bs); err != nil {
				return nil, fmt.Errorf("inode %d: %w", in.ino, err)
			}
		}
	}
	return out, nil
}

// inodeName is the Structure of a CorruptError about inode ino.
func inodeName(ino uint32) string { return fmt.Sprintf("ext4 inode %d", ino) }
