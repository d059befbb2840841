package diskscan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Image is a disk image opened read-only: raw, or qcow2 (format detected from the header).
// It is safe for concurrent use.
type Image struct {
	r       io.ReaderAt
	size    int64
	format  string
	closers []io.Closer
}

// OpenImage opens path read-only. A qcow2 image's backing files are opened too (a
// relative name is taken relative to the image's directory); compressed or encrypted
// clusters are refused with an error that names the offset.
func OpenImage(path string) (*Image, error) {
	return openImage(path, 0)
}

func openImage(path string, depth int) (*Image, error) {
	if depth > qcowMaxBacking {
		return nil, fmt.Errorf("%s: backing chain deeper than %d: %w", path, qcowMaxBacking, ErrUnsupportedImage)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	im, err := imageFromFile(f, path, depth)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening image %s: %w", path, err)
	}
	return im, nil
}

func imageFromFile(f *os.File, path string, depth int) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if st.Mode()&os.ModeDevice != 0 {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	magic := make([]byte, 4)
	if n, _ := f.ReadAt(magic, 0); n < 4 || binary.BigEndian.Uint32(magic) != qcowMagic {
		return &Image{r: f, size: size, format: "raw", closers: []io.Closer{f}}, nil
	}
	hd, err := parseQcow2Header(f, size)
	if err != nil {
		return nil, err
	}
	im := &Image{size: hd.size, format: "qcow2", closers: []io.Closer{f}}
	var backing *Image
	var backingSize int64
	if hd.backingName != "" {
		bp := hd.backingName
		if !filepath.IsAbs(bp) {
			bp = filepath.Join(filepath.Dir(path), bp)
		}
		b, err := openImage(bp, depth+1)
		if err != nil {
			return nil, fmt.Errorf("backing file: %w", err)
		}
		im.closers = append(im.closers, b)
		backing, backingSize = b, b.Size()
	}
	var br io.ReaderAt
	if backing != nil {
		br = backing
	}
	q, err := newQcow2(f, size, hd, br, backingSize)
	if err != nil {
		if backing != nil {
			backing.Close()
		}
		return nil, err
	}
	im.r = q
	return im, nil
}

// ReadAt reads guest-visible bytes of the virtual disk.
func (im *Image) ReadAt(p []byte, off int64) (int, error) { return im.r.ReadAt(p, off) }

// Size is the virtual disk size in bytes.
func (im *Image) Size() int64 { return im.size }

// Format is "raw" or "qcow2".
func (im *Image) Format() string { return im.format }

// Close closes the image and its backing files.
func (im *Image) Close() error {
	var errs []error
	for _, c := range im.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
