package diskscan

import (
	"fmt"
	"io"
	"sort"
)

// file reads a regular file's contents: extents are read with one ReadAt per contiguous
// run, holes and uninitialized extents read as zeros. Not safe for concurrent Read calls
// on one file; separate files may be read in parallel.
type file struct {
	fs     *ext4FS
	ino    uint32
	size   int64
	exts   []extent
	inline []byte // contents of an inline-data file
	off    int64
}

func (o *op) openInode(in *inode) (*file, error) {
	if in.fileType() != Regular {
		return nil, fmt.Errorf("inode %d is a %v, not a regular file", in.ino, in.fileType())
	}
	f := &file{fs: o.fs, ino: in.ino, size: in.size}
	if in.flags&flagInlineData != 0 {
		x, err := o.xattrs(in)
		if err != nil {
			return nil, err
		}
		if f.inline, err = o.fs.inlineData(in, x); err != nil {
			return nil, err
		}
		return f, nil
	}
	exts, err := o.mapBlocks(in)
	if err != nil {
		return nil, err
	}
	f.exts = exts
	return f, nil
}

// ReadAt reads file bytes at off.
func (f *file) ReadAt(p []byte, off int64) (n int, err error) {
	defer recoverCorrupt(&err, "ext4 file")
	if off < 0 {
		return 0, fmt.Errorf("inode %d: negative offset", f.ino)
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), f.size-off))
	if f.inline != nil {
		n := copy(p[:want], f.inline[off:])
		return f.eof(n, len(p))
	}
	bs := f.fs.bs
	done := 0
	for done < want {
		pos := off + int64(done)
		lblk := uint64(pos / bs)
		i := sort.Search(len(f.exts), func(i int) bool { return f.exts[i].lblk+f.exts[i].n > lblk })
		rest := want - done
		if i == len(f.exts) || f.exts[i].lblk > lblk { // hole up to the next extent
			if i < len(f.exts) {
				rest = int(min(int64(rest), int64(f.exts[i].lblk)*bs-pos))
			}
			clear(p[done : done+rest])
			done += rest
			continue
		}
		e := f.exts[i]
		rest = int(min(int64(rest), int64(e.lblk+e.n)*bs-pos))
		if e.uninit {
			clear(p[done : done+rest])
		} else {
			phys := int64(e.pblk)*bs + pos - int64(e.lblk)*bs
			if _, err := f.fs.dev.ReadAt(p[done:done+rest], phys); err != nil {
				return done, fmt.Errorf("reading inode %d at volume offset %#x: %w", f.ino, phys, err)
			}
		}
		done += rest
	}
	return f.eof(done, len(p))
}

func (f *file) eof(n, asked int) (int, error) {
	if n < asked {
		return n, io.EOF
	}
	return n, nil
}

func (f *file) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// readChunk is the size of the reads WriteTo issues: large enough to stream an extent at
// disk speed, small enough to keep memory per open file bounded.
const readChunk = 1 << 20

// WriteTo lets io.Copy stream the file in large chunks instead of its 32 KiB buffer.
func (f *file) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, min(readChunk, max(f.size-f.off, 1)))
	var total int64
	for {
		n, err := f.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (f *file) Close() error { return nil }
