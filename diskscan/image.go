package diskscan

import (
	"errors"
	"io"
)

// Image is a disk image opened read-only: raw, or qcow2 (format detected from the header).
type Image struct {
	r       io.ReaderAt
	size    int64
	format  string
	closers []io.Closer
}

// OpenImage opens path read-only. A qcow2 image's backing files are opened too (paths
// relative to the image's directory); compressed or encrypted clusters are refused with
// an error that names the offset.
func OpenImage(path string) (*Image, error) {
	return nil, errors.New("diskscan: OpenImage not implemented yet")
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
