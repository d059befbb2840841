package integrity

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
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

// hash reads the file through the filesystem and fills s.rec.Hashes (and, for a
// growing file, the hashes of its first s.prefix bytes).
func (c *collector) hash(s *slot, buf []byte) error {
	r := s.rec
	algs := (r.Attrs & HashAttrs).Attrs()
	full := make([]hash.Hash, len(algs))
	var pre []hash.Hash
	for i, a := range algs {
		full[i] = newHash(a)
		if s.prefix >= 0 {
			pre = append(pre, newHash(a))
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
	var total int64
	for {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		n, err := rc.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			for _, h := range full {
				h.Write(chunk)
			}
			if total < s.prefix {
				p := chunk[:min(int64(n), s.prefix-total)]
				for _, h := range pre {
					h.Write(p)
				}
			}
			total += int64(n)
			c.opt.Counters.Bytes.Add(int64(n))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading at offset %d: %w", total, err)
		}
	}
	c.opt.Counters.Hashed.Add(1)
	if total != r.Size {
		return fmt.Errorf("read %d bytes but the inode says %d (file changed while reading?)", total, r.Size)
	}
	for i, a := range algs {
		r.Hashes.set(a, hex.EncodeToString(full[i].Sum(nil)))
	}
	if s.prefix >= 0 {
		r.prefix = new(Hashes)
		for i, a := range algs {
			r.prefix.set(a, hex.EncodeToString(pre[i].Sum(nil)))
		}
	}
	return nil
}
