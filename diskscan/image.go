package diskscan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/domainm/domainm/internal/mmap"
)

// Image is a disk image opened read-only: raw, or qcow2 (format detected from the header).
// It is safe for concurrent use.
type Image struct {
	r       io.ReaderAt
	size    int64
	format  string
	closers []io.Closer
	// mem maps a raw image file (nil when it could not be mapped, or not raw): file
	// contents are hashed from it without copying (see file.WriteTo).
	mem *mmap.Mapping
}

// mapImages makes raw image files mapped as well as opened (tests turn it off to
// compare both paths).
var mapImages = true

// mapping is the raw image's read-only mapping, or nil.
func (im *Image) mapping() *mmap.Mapping { return im.mem }

// OpenImage opens path read-only, detecting the format from the header. A qcow2 image's
// backing files are opened too (a relative name is taken relative to the image's
// directory; the backing format recorded in the header is honoured); compressed clusters
// are inflated (deflate), zstd-compressed or encrypted ones refused.
//
// Probing is only safe for images known not to be raw: a guest can write a qcow2 header
// into sector 0 of its raw disk and name a host file as "backing file". When the format
// is known, use OpenImageFormat.
func OpenImage(path string) (*Image, error) {
	return openImage(path, "", 0)
}

// OpenImageFormat opens path read-only as format "raw" or "qcow2" ("" probes, as
// OpenImage does).
func OpenImageFormat(path, format string) (_ *Image, err error) {
	defer recoverCorrupt(&err, path)
	switch format {
	case "", "raw", "qcow2":
		return openImage(path, format, 0)
	}
	return nil, fmt.Errorf("image format %q: %w", format, ErrUnsupportedImage)
}

func openImage(path, format string, depth int) (*Image, error) {
	if depth > qcowMaxBacking {
		return nil, fmt.Errorf("%s: backing chain deeper than %d: %w", path, qcowMaxBacking, ErrUnsupportedImage)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	im, err := imageFromFile(f, path, format, depth)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening image %s: %w", path, err)
	}
	return im, nil
}

func imageFromFile(f *os.File, path, format string, depth int) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	switch {
	case st.Mode()&os.ModeDevice != 0:
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, err
		}
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("not a regular file or device (%v): %w", st.Mode().Type(), ErrUnsupportedImage)
	}
	if format == "" {
		format = "raw"
		magic := make([]byte, 4)
		if n, _ := f.ReadAt(magic, 0); n == 4 && binary.BigEndian.Uint32(magic) == qcowMagic {
			format = "qcow2"
		}
	}
	if format == "raw" {
		im := &Image{r: f, size: size, format: "raw", closers: []io.Closer{f}}
		// A regular file is also mapped, read-only, for reading file contents without
		// a copy. Reads of the mapping run under mmap.Do: a guest image truncated under
		// it is an error, not a SIGBUS. Where it cannot be mapped, preads serve.
		if mapImages && depth == 0 && st.Mode().IsRegular() && size > 0 {
			if m, err := mmap.Map(f, size); err == nil {
				im.mem = m
				im.closers = []io.Closer{m, f}
			}
		}
		return im, nil
	}
	hd, err := parseQcow2Header(f, size)
	if err != nil {
		return nil, err
	}
	im := &Image{size: hd.size, format: "qcow2", closers: []io.Closer{f}}
	var backing *Image
	if hd.backingName != "" {
		bp := hd.backingName
		if !filepath.IsAbs(bp) {
			bp = filepath.Join(filepath.Dir(path), bp)
		}
		switch hd.backingFormat {
		case "", "raw", "qcow2":
		default:
			return nil, fmt.Errorf("backing file %s: format %q: %w", bp, hd.backingFormat, ErrUnsupportedImage)
		}
		if backing, err = openImage(bp, hd.backingFormat, depth+1); err != nil {
			return nil, fmt.Errorf("backing file: %w", err)
		}
		im.closers = append(im.closers, backing)
	}
	var br io.ReaderAt
	var backingSize int64
	if backing != nil {
		br, backingSize = backing, backing.Size()
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
