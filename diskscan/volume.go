package diskscan

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// OpenFS detects the filesystem on r (ext2/3/4 by superblock); other filesystems give
// ErrUnsupportedFS. A filesystem whose root directory cannot be read at all is an error
// (matching ErrCorrupt): there would be nothing to scan.
//
// The FS caches metadata (bounded). It does not notice later changes of the image beyond
// the retries of inconsistent reads: open the volume again for each scan pass.
func OpenFS(r io.ReaderAt, size int64) (_ FS, err error) {
	defer recoverCorrupt(&err, "ext4 superblock")
	fs, err := openExt4(r, size)
	if err != nil {
		return nil, err
	}
	if err := fs.checkRoot(); err != nil {
		return nil, err
	}
	return fs, nil
}

// checkRoot reads the root directory: its inode must be a directory and its listing must
// give at least one entry (a partly damaged listing is left to the walk to report). It
// reads past the metadata cache, so that opening a volume does not fill the cache before
// the caller's first operation, and retries as fs.retry does, a little longer: a guest
// writing its inode table must not make the whole volume fail.
func (fs *ext4FS) checkRoot() error {
	var err error
	for i := range max(1, fs.retries.rootAttempts) {
		if i > 0 && fs.retryWait.Load() < fs.retries.maxWait {
			d := min(fs.retries.backoff<<(2*(i-1)), 16*fs.retries.backoff) // 1, 4, 16, 16, ... ms
			fs.retryWait.Add(int64(d))
			time.Sleep(d)
		}
		if err = guarded(fs.readRoot, fs.newOp(true)); err == nil {
			return nil
		}
	}
	return fmt.Errorf("ext4 root directory (inode %d) unreadable: %w", rootIno, err)
}

// rootAttempts is how often checkRoot reads the root before it gives up: more than
// maxAttempts, since failing here loses the whole volume, not one path.
const rootAttempts = 8

func (fs *ext4FS) readRoot(o *op) error {
	in, err := o.readInode(rootIno)
	if err != nil {
		return err
	}
	if in.fileType() != Dir {
		return fs.corrupt(inodeName(rootIno), in.off, "a %v, not a directory", in.fileType())
	}
	if ents, err := o.listDir(in, &fs.dirs); err != nil && len(ents) == 0 {
		return err
	}
	return nil
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
