package diskscan

import (
	"errors"
	"fmt"
	"io"
)

// OpenFS detects the filesystem on r (ext2/3/4 by superblock); other filesystems give
// ErrUnsupportedFS.
//
// The FS caches metadata (bounded). It does not notice later changes of the image beyond
// the retries of inconsistent reads: open the volume again for each scan pass.
func OpenFS(r io.ReaderAt, size int64) (FS, error) {
	fs, err := openExt4(r, size)
	if err != nil {
		return nil, err
	}
	return fs, nil
}

// OpenVolume opens the image at path and the filesystem on partition partIndex (the
// Partition.Index), or with partIndex -1 the first partition that holds a supported
// filesystem. The returned Closer closes the image.
func OpenVolume(path string, partIndex int) (FS, io.Closer, error) {
	im, err := OpenImage(path)
	if err != nil {
		return nil, nil, err
	}
	fs, err := openVolume(im, im.Size(), partIndex)
	if err != nil {
		im.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return fs, im, nil
}

func openVolume(r io.ReaderAt, size int64, partIndex int) (FS, error) {
	parts, err := Partitions(r, size)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, p := range parts {
		if partIndex >= 0 && p.Index != partIndex {
			continue
		}
		fs, err := OpenFS(io.NewSectionReader(r, p.Start, p.Size), p.Size)
		if err == nil {
			return fs, nil
		}
		errs = append(errs, fmt.Errorf("partition %d (%s, start %#x): %w", p.Index, p.Scheme, p.Start, err))
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no partition %d among %d: %w", partIndex, len(parts), ErrUnsupportedFS)
	}
	return nil, errors.Join(errs...)
}
