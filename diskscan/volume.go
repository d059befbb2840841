package diskscan

import (
	"errors"
	"io"
)

// OpenFS detects the filesystem on r (ext2/3/4 by superblock); other filesystems give
// ErrUnsupportedFS.
func OpenFS(r io.ReaderAt, size int64) (FS, error) {
	return nil, errors.New("diskscan: OpenFS not implemented yet")
}

// OpenVolume opens the image at path and the filesystem on partition partIndex (the
// Partition.Index), or with partIndex -1 the first partition that holds a supported
// filesystem. The returned Closer closes the image.
func OpenVolume(path string, partIndex int) (FS, io.Closer, error) {
	return nil, nil, errors.New("diskscan: OpenVolume not implemented yet")
}
