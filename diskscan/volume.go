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
func OpenFS(r io.ReaderAt, size int64) (_ FS, err error) {
	defer recoverCorrupt(&err, "ext4 superblock")
	fs, err := openExt4(r, size)
	if err != nil {
		return nil, err
	}
	return fs, nil
}

// OpenVolume opens the image at path and the filesystem on partition partIndex (the
// Partition.Index). With partIndex -1 it picks the partition that looks like a root
// filesystem (a supported filesystem with /etc), else the first supported one, else the
// whole disk as a bare filesystem. The returned Closer closes the image.
func OpenVolume(path string, partIndex int) (FS, io.Closer, error) {
	return OpenVolumeFormat(path, "", partIndex)
}

// OpenVolumeFormat is OpenVolume for an image of a known format ("raw", "qcow2"; ""
// probes). Prefer it whenever the format is known: see OpenImage on probing raw images.
func OpenVolumeFormat(path, format string, partIndex int) (FS, io.Closer, error) {
	im, err := OpenImageFormat(path, format)
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
	var first FS
	for _, p := range parts {
		if partIndex >= 0 && p.Index != partIndex {
			continue
		}
		fs, err := OpenFS(io.NewSectionReader(r, p.Start, p.Size), p.Size)
		if err != nil {
			errs = append(errs, fmt.Errorf("partition %d (%s, start %#x): %w", p.Index, p.Scheme, p.Start, err))
			continue
		}
		if partIndex >= 0 {
			return fs, nil
		}
		if e, err := fs.Lstat("/etc"); err == nil && e.Type == Dir {
			return fs, nil
		}
		if first == nil {
			first = fs
		}
	}
	if first != nil {
		return first, nil
	}
	if partIndex < 0 && (len(parts) == 0 || parts[0].Scheme != "none") {
		// Sector 0 may look like a table without being one (a boot loader in front of a
		// bare filesystem).
		if fs, err := OpenFS(r, size); err == nil {
			return fs, nil
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no partition %d among %d: %w", partIndex, len(parts), ErrUnsupportedFS)
	}
	return nil, errors.Join(errs...)
}
