package integrity

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync/atomic"
)

func newHash(a Attr) hash.Hash {
	switch a {
	case AttrSHA512:
		return sha512.New()
	default:
		return sha256.New()
	}
}

// inodeOpener is a filesystem that opens a file by the inode number its walk reported
// (diskscan's ext4): the walked inode is hashed without a second path lookup.
type inodeOpener interface {
	OpenInode(ino uint64) (io.ReadCloser, error)
}

// hashWriter feeds file contents to the hashes of a record: every byte to full, the
// first prefix bytes to pre too. It stops the read when the context ends.
type hashWriter struct {
	ctx    context.Context
	full   []hash.Hash
	pre    []hash.Hash
	prefix int64 // growing files: bytes hashed into pre; -1 none
	total  int64
	bytes  *atomic.Int64
}

func (w *hashWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	for _, h := range w.full {
		h.Write(p)
	}
	if w.total < w.prefix {
		q := p[:min(int64(len(p)), w.prefix-w.total)]
		for _, h := range w.pre {
			h.Write(q)
		}
	}
	w.total += int64(len(p))
	w.bytes.Add(int64(len(p)))
	return len(p), nil
}

// hash reads the file through the filesystem and fills s.rec.Hashes (and, for a
// growing file, the hashes of its first s.prefix bytes). A reader that can write itself
// (diskscan's files: from a mapping of a raw image, without a copy) does so; others are
// read through buf.
func (c *collector) hash(s *slot, buf []byte) error {
	r := s.rec
	algs := (r.Attrs & HashAttrs).Attrs()
	w := &hashWriter{ctx: c.ctx, full: make([]hash.Hash, len(algs)), prefix: s.prefix, bytes: &c.opt.Counters.Bytes}
	for i, a := range algs {
		w.full[i] = newHash(a)
		if s.prefix >= 0 {
			w.pre = append(w.pre, newHash(a))
		}
	}
	var rc io.ReadCloser
	var err error
	if o, ok := c.fsys.(inodeOpener); ok && r.Inode != 0 {
		rc, err = o.OpenInode(r.Inode)
	} else {
		rc, err = c.fsys.Open(r.Path)
	}
	if err != nil {
		return fmt.Errorf("opening: %w", err)
	}
	defer rc.Close()
	if wt, ok := rc.(io.WriterTo); ok {
		if _, err := wt.WriteTo(w); err != nil {
			if cerr := c.ctx.Err(); cerr != nil {
				return cerr
			}
			return fmt.Errorf("reading at offset %d: %w", w.total, err)
		}
	} else {
		for {
			if err := c.ctx.Err(); err != nil {
				return err
			}
			n, err := rc.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("reading at offset %d: %w", w.total, err)
			}
		}
	}
	c.opt.Counters.Hashed.Add(1)
	if w.total != r.Size {
		return fmt.Errorf("read %d bytes but the inode says %d (file changed while reading?)", w.total, r.Size)
	}
	for i, a := range algs {
		r.Hashes.set(a, hex.EncodeToString(w.full[i].Sum(nil)))
	}
	if s.prefix >= 0 {
		r.prefix = new(Hashes)
		for i, a := range algs {
			r.prefix.set(a, hex.EncodeToString(w.pre[i].Sum(nil)))
		}
	}
	return nil
}
