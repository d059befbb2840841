package diskscan

import (
	"encoding/binary"
	"fmt"
)

const (
	xattrMagic = 0xEA020000
	maxXattrs  = 1024
	// maxEAInodeValue is the kernel's XATTR_SIZE_MAX: no value, in an EA inode or not,
	// can be larger.
	maxEAInodeValue = 64 << 10
	// maxXattrBytes bounds the values of one inode together. In-inode and xattr-block
	// values are bounded by those structures; EA-inode values are not (up to maxXattrs
	// entries may name one 64 KiB inode), so an inode whose values exceed this is
	// reported as corrupt rather than costing up to 64 MiB.
	maxXattrBytes = 1 << 20
)

var xattrPrefix = map[uint8]string{
	1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default",
	4: "trusted.", 6: "security.", 7: "system.", 8: "system.richacl",
}

// xattrs returns an inode's extended attributes: those stored in the inode after
// i_extra_isize and those in its xattr block (i_file_acl). Values kept in EA inodes are
// read, but an EA inode's own xattrs never are (see eaInodeValue), so this does not
// recurse.
func (o *op) xattrs(in *inode) (map[string][]byte, error) {
	var out map[string][]byte
	le := binary.LittleEndian
	p := &xattrParse{o: o, owner: in.ino, at: in.off + 128 + in.extra + 4}
	if start := 128 + in.extra; in.extra > 0 && start+4 <= int64(len(in.raw)) && le.Uint32(in.raw[start:]) == xattrMagic {
		region := in.raw[start+4:]
		var err error
		if out, err = p.parse(region, 0, region, out); err != nil {
			return nil, fmt.Errorf("inode %d in-inode xattrs: %w", in.ino, err)
		}
	}
	if in.fileACL != 0 {
		b, err := o.block(in.fileACL, in.off+0x68)
		if err != nil {
			return nil, fmt.Errorf("inode %d xattr block: %w", in.ino, err)
		}
		if le.Uint32(b) != xattrMagic || le.Uint32(b[8:]) != 1 {
			return nil, o.fs.corrupt(fmt.Sprintf("ext4 xattr block %d of %s", in.fileACL, inodeName(in.ino)), int64(in.fileACL)*o.fs.bs, "bad header")
		}
		if err := o.verifyXattrBlock(b, in.fileACL); err != nil {
			return nil, fmt.Errorf("inode %d: %w", in.ino, err)
		}
		p.at = int64(in.fileACL) * o.fs.bs
		if out, err = p.parse(b, 32, b, out); err != nil {
			return nil, fmt.Errorf("inode %d xattr block %d: %w", in.ino, in.fileACL, err)
		}
	}
	return out, nil
}

// xattrParse parses the xattrs of one inode, counting their value bytes.
type xattrParse struct {
	o     *op
	owner uint32 // the inode whose xattrs these are
	bytes int64  // value bytes so far
	at    int64  // volume offset of the region parsed (for errors)
}

// corrupt reports a bad xattr entry at pos in the region parsed.
func (p *xattrParse) corrupt(pos int, format string, args ...any) error {
	return p.o.fs.corrupt("ext4 xattr entry of "+inodeName(p.owner), p.at+int64(pos), format, args...)
}

// parse parses xattr entries in b from pos; value offsets are relative to vals.
func (p *xattrParse) parse(b []byte, pos int, vals []byte, out map[string][]byte) (map[string][]byte, error) {
	le := binary.LittleEndian
	for n := 0; pos+4 <= len(b) && le.Uint32(b[pos:]) != 0; n++ {
		if n >= maxXattrs || pos+16 > len(b) {
			return nil, p.corrupt(pos, "entry %d", n)
		}
		nameLen := int(b[pos])
		idx := b[pos+1]
		voff := int(le.Uint16(b[pos+2:]))
		vino := le.Uint32(b[pos+4:])
		vsize := int64(le.Uint32(b[pos+8:]))
		if pos+16+nameLen > len(b) {
			return nil, p.corrupt(pos, "name of %d bytes", nameLen)
		}
		name := xattrPrefix[idx] + string(b[pos+16:pos+16+nameLen])
		if vsize > maxEAInodeValue {
			return nil, p.corrupt(pos, "xattr %q: value of %d bytes over XATTR_SIZE_MAX", name, vsize)
		}
		if p.bytes += vsize; p.bytes > maxXattrBytes {
			return nil, p.corrupt(pos, "xattr %q: values of inode %d exceed %d bytes", name, p.owner, maxXattrBytes)
		}
		var val []byte
		switch {
		case vino != 0 && vsize == 0:
			// A zero-length value holds no bytes: its EA inode is not read. The kernel
			// reports the length 0 and would refuse to read the value (the inode's size is
			// not 0), e2fsck finds such an image clean (f_ea_zero_size); an empty value
			// says what can be said without costing the whole entry.
			val = []byte{}
		case vino != 0:
			v, err := p.o.eaInodeValue(p.owner, vino, vsize, p.at+int64(pos))
			if err != nil {
				return nil, fmt.Errorf("xattr %q: %w", name, err)
			}
			val = v
		default:
			if int64(voff)+vsize > int64(len(vals)) {
				return nil, p.corrupt(pos, "xattr %q value %d+%d out of bounds", name, voff, vsize)
			}
			val = append([]byte(nil), vals[voff:int64(voff)+vsize]...)
		}
		if out == nil {
			out = make(map[string][]byte)
		}
		out[name] = val
		pos += (16 + nameLen + 3) &^ 3
	}
	return out, nil
}

// eaInodeValue reads a large xattr value kept in its own inode (ea_inode feature). As in
// the kernel (ext4_xattr_inode_iget), the value inode must be another inode than its
// owner, flagged EA_INODE, a regular file of the value's size; its contents are read
// through its block map only: an EA inode with inline data (whose contents would be its
// own xattrs) is corrupt, so reading a value never reads another inode's xattrs, and
// f_ea_inode_self_ref cannot recurse.
// at is the volume offset of the xattr entry naming it.
func (o *op) eaInodeValue(owner, ino uint32, size, at int64) ([]byte, error) {
	entry := "ext4 xattr entry of " + inodeName(owner)
	if ino == owner {
		return nil, o.fs.corrupt(entry, at, "value inode %d is the inode itself", ino)
	}
	if size > maxEAInodeValue {
		return nil, o.fs.corrupt(entry, at, "value inode %d: %d bytes over limit", ino, size)
	}
	in, err := o.readInode(ino)
	if err != nil {
		return nil, err
	}
	if in.flags&flagEAInode == 0 || in.fileType() != Regular || in.size != size {
		return nil, o.fs.corrupt(inodeName(ino), in.off, "not an EA inode of %d bytes (value of inode %d)", size, owner)
	}
	if in.flags&flagInlineData != 0 {
		return nil, o.fs.corrupt(inodeName(ino), in.off+0x20, "EA inode with inline data (value of inode %d)", owner)
	}
	return o.readSmall(in, maxEAInodeValue)
}
