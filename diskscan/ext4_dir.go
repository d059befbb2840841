package diskscan

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
)

// dirent is one name in a directory. err is set for an entry that cannot be used
// (a name with '/' or NUL, a duplicate name).
type dirent struct {
	name string
	ino  uint32
	typ  uint8 // file type from the entry (2 = directory), 0 without the filetype feature
	err  error
}

const maxDirEntries = 1 << 20

// readDir lists a directory's entries without "." and "..", sorted by name. htree
// directories are read as linear ones (see readBlockDir). With corrupt blocks it
// returns the entries of the others and an error.
func (o *op) readDir(in *inode) ([]dirent, error) {
	if in.fileType() != Dir {
		return nil, o.fs.corrupt(inodeName(in.ino), in.off, "not a directory")
	}
	var out []dirent
	var err error
	if in.flags&flagInlineData != 0 {
		out, err = o.readInlineDir(in)
	} else {
		out, err = o.readBlockDir(in)
	}
	out = o.fs.fc.patchDir(in.ino, out) // replayed fast commits
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	for i := 1; i < len(out); i++ {
		if out[i].name == out[i-1].name && out[i].err == nil {
			out[i].err = o.fs.corrupt("ext4 directory "+inodeName(in.ino), in.off, "duplicate name %q", out[i].name)
		}
	}
	return out, err
}

func (o *op) readInlineDir(in *inode) ([]dirent, error) {
	x, err := o.xattrs(in)
	if err != nil {
		return nil, err
	}
	// i_block: 4-byte parent inode, then entries; system.data continues them.
	out, err := o.parseDirBlock(in.iblock[4:], in.off+0x28+4, nil)
	if err != nil {
		return out, fmt.Errorf("inline directory inode %d: %w", in.ino, err)
	}
	if d := x["system.data"]; len(d) > 0 {
		out, err = o.parseDirBlock(d, in.off, out) // in the inode's xattrs
		if err != nil {
			return out, fmt.Errorf("inline directory inode %d (system.data): %w", in.ino, err)
		}
	}
	return out, nil
}

// readBlockDir reads every block of a block-mapped directory, as the kernel's readdir
// does when a directory is not indexed or its htree index is damaged (dx_probe fails and
// ext4_readdir falls back to a linear scan). Index blocks hold no names (their entries
// span the block as "." and ".." or as one empty entry), so they are skipped and damage
// to them, a bad checksum included, hides nothing. A leaf block that fails its checksum
// or does not parse is skipped too, as the kernel skips it; the names in the other
// blocks are returned with an error naming the first bad block, so the damage costs
// this directory's bad blocks, not the directory or the filesystem.
func (o *op) readBlockDir(in *inode) ([]dirent, error) {
	exts, err := o.mapBlocks(in)
	if err != nil {
		return nil, err
	}
	var out []dirent
	bs := o.fs.bs
	seed := o.fs.inodeSeed(in.ino, in.raw)
	indexed := in.flags&flagIndex != 0
	var firstErr error
	bad := 0
	// A physical block read once is not read again for another logical block: a sound
	// directory never maps one block twice, and a hostile one that does would make one
	// listing cost far more memory than the directory's size on disk.
	seen := make(map[uint64]struct{})
scan:
	for _, e := range exts {
		if e.uninit {
			continue
		}
		for i := uint64(0); i < e.n; i++ {
			if err := o.spend("ext4 directory "+inodeName(in.ino), in.off); err != nil {
				return out, fmt.Errorf("directory inode %d: %w", in.ino, err)
			}
			lblk, at := e.lblk+i, int64(e.pblk+i)*bs
			var b []byte
			var err error
			if _, dup := seen[e.pblk+i]; dup {
				err = o.fs.corrupt("ext4 directory "+inodeName(in.ino), in.off, "block %d mapped again", e.pblk+i)
			} else {
				seen[e.pblk+i] = struct{}{}
				b, err = o.block(e.pblk+i, in.off)
			}
			if err == nil && indexed {
				if dx, _ := o.dxBlock(b, lblk, at, seed); dx {
					continue // htree index: no names, whatever its checksum says
				}
			}
			if err == nil {
				err = o.verifyDirBlock(b, seed, at)
			}
			if err == nil {
				out, err = o.parseDirBlock(b, at, out) // the entries before a bad one are kept
			}
			if err != nil {
				if bad++; firstErr == nil {
					firstErr = fmt.Errorf("block %d at %#x: %w", lblk, at, err)
				}
				if len(out) >= maxDirEntries {
					break scan
				}
			}
		}
	}
	if firstErr != nil {
		return out, fmt.Errorf("directory inode %d: %d unreadable block(s), first %w", in.ino, bad, firstErr)
	}
	return out, nil
}

// parseDirBlock appends the live entries of one block of linear directory entries.
// at is the volume offset of b.
func (o *op) parseDirBlock(b []byte, at int64, out []dirent) ([]dirent, error) {
	le := binary.LittleEndian
	fileType := o.fs.incompat&incompatFiletype != 0
	for pos := 0; pos+8 <= len(b); {
		ino := le.Uint32(b[pos:])
		rec := int(le.Uint16(b[pos+4:]))
		if o.fs.bs >= 65536 { // rec_len encoding for 64 KiB blocks
			if rec == 65535 || rec == 0 {
				rec = int(o.fs.bs)
			} else {
				rec = rec&65532 | (rec&3)<<16
			}
		}
		nameLen := int(b[pos+6])
		if !fileType {
			nameLen |= int(b[pos+7]) << 8
		}
		if rec < 8 || rec%4 != 0 || rec > len(b)-pos || 8+nameLen > rec {
			return out, o.fs.corrupt("ext4 directory entry", at+int64(pos), "rec_len %d, name_len %d", rec, nameLen)
		}
		name := b[pos+8 : pos+8+nameLen]
		pos += rec
		if ino == 0 || nameLen == 0 || string(name) == "." || string(name) == ".." {
			continue
		}
		if len(out) >= maxDirEntries {
			return out, o.fs.corrupt("ext4 directory entry", at+int64(pos-rec), "more than %d directory entries", maxDirEntries)
		}
		d := dirent{name: string(name), ino: ino}
		if fileType {
			d.typ = b[pos-rec+7]
		}
		if bytes.IndexByte(name, '/') >= 0 || bytes.IndexByte(name, 0) >= 0 {
			d.name = fmt.Sprintf("%q", name)
			d.err = o.fs.corrupt("ext4 directory entry", at+int64(pos-rec), "name %q contains '/' or NUL", name)
		}
		out = append(out, d)
	}
	return out, nil
}

// dxBlock recognises the index blocks of an htree directory: the root (logical block 0:
// "." and a ".." spanning the block, then dx_root_info) and interior nodes (one empty
// entry spanning the block). Their names are only "." and "..", so they are skipped, but
// with metadata_csum their checksum (dx_tail after `limit` entries) is verified first, so
// a torn index block is retried rather than half-parsed. Blocks that do not have this
// shape are read as ordinary directory blocks.
func (o *op) dxBlock(b []byte, lblk uint64, at int64, seed uint32) (bool, error) {
	le := binary.LittleEndian
	bs := len(b)
	var countOff int
	switch {
	case lblk == 0:
		if le.Uint16(b[4:]) != 12 || string(b[8:10]) != ".\x00" || int(le.Uint16(b[16:])) != bs-12 ||
			b[18] != 2 || le.Uint32(b[24:]) != 0 || b[29] != 8 {
			return false, nil
		}
		countOff = 24 + 8
	case le.Uint32(b) == 0 && int(le.Uint16(b[4:])) == bs && bs < 65536:
		countOff = 8
	default:
		return false, nil
	}
	limit, count := int(le.Uint16(b[countOff:])), int(le.Uint16(b[countOff+2:]))
	if count > limit || countOff+limit*8 > bs {
		return true, o.fs.corrupt(fmt.Sprintf("ext4 htree block %d", lblk), at+int64(countOff), "count %d, limit %d", count, limit)
	}
	if !o.fs.csums() {
		return true, nil
	}
	t := countOff + limit*8
	if t+8 > bs {
		return true, o.fs.corrupt(fmt.Sprintf("ext4 htree block %d", lblk), at+int64(countOff), "no room for the checksum")
	}
	c := crc32c(seed, b[:countOff+count*8])
	c = crc32c(c, b[t:t+4])           // dt_reserved
	c = crc32c(c, []byte{0, 0, 0, 0}) // dt_checksum, zeroed
	if want := le.Uint32(b[t+4:]); c != want {
		return true, o.fs.corrupt(fmt.Sprintf("ext4 htree block %d", lblk), at+int64(t)+4, "checksum %#x, computed %#x", want, c)
	}
	return true, nil
}
