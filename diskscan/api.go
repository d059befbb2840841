package diskscan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrUnsupportedFS is returned by OpenFS when no supported filesystem is found.
var ErrUnsupportedFS = errors.New("unsupported or unknown filesystem")

// ErrCorrupt marks metadata that fails a consistency check (bad magic, out-of-range
// block, loop in a tree, ...). Every error that matches it holds a *CorruptError naming
// the structure and its offset (errors.As).
var ErrCorrupt = errors.New("corrupt or inconsistent metadata")

// CorruptError reports metadata that fails a consistency check. It matches ErrCorrupt.
//
// Offset is a byte offset in the disk image, for a hex editor: the bad field when it is
// known, else the start of the structure that holds it. For qcow2 structures (Structure
// begins with "qcow2") it is an offset in the qcow2 file; for partition tables and
// filesystems it is an offset in the disk as the guest sees it, which is the file offset
// of a raw image (a filesystem in a partition adds the partition's start); for a
// filesystem in a qcow2 image, convert it to raw (qemu-img convert) to look there. When
// a filesystem was opened with OpenFS on a reader that is not an io.SectionReader of the
// disk, offsets are relative to that reader. A parser bug caught on a hostile image (see
// recoverCorrupt) has Offset -1: the place is not known.
type CorruptError struct {
	Structure string // what is corrupt: "ext4 inode 12", "ext4 extent block 4711", "qcow2 L2 table", "GPT header"
	Offset    int64  // byte offset in the image (see above)
	Reason    string // what is wrong with it
	Err       error  // underlying error, or nil
}

func (e *CorruptError) Error() string {
	s := fmt.Sprintf("%s at %#x: %s", e.Structure, e.Offset, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s + ": " + ErrCorrupt.Error()
}

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// Unwrap returns the underlying error.
func (e *CorruptError) Unwrap() error { return e.Err }

// corruptf makes a *CorruptError.
func corruptf(structure string, off int64, format string, args ...any) error {
	return &CorruptError{Structure: structure, Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// recoverCorrupt turns a panic in a parser into an error matching ErrCorrupt. Every
// length and offset is checked, but a bug met on one hostile image must cost that path
// (or that image), not the supervisor. Use it as a deferred call at the entry points.
func recoverCorrupt(err *error, what string) {
	if r := recover(); r != nil {
		if bugsPanic {
			panic(r)
		}
		*err = &CorruptError{Structure: what, Offset: -1, Reason: fmt.Sprintf("internal error on this image (%v); please report it", r)}
	}
}

// bugsPanic makes recoverCorrupt re-panic. The package's tests and fuzz targets set it,
// so that a bug still fails them instead of hiding behind ErrCorrupt.
var bugsPanic = false

// guarded runs f(o) with recoverCorrupt.
func guarded[T any](f func(T) error, o T) (err error) {
	defer recoverCorrupt(&err, "ext4")
	return f(o)
}

// ErrUnsupportedImage is returned for image features this package refuses to read
// (compressed or encrypted qcow2 clusters, external data files, ...).
var ErrUnsupportedImage = errors.New("unsupported image feature")

// FileType is the kind of a filesystem entry.
type FileType uint8

// File types.
const (
	Unknown FileType = iota
	Regular
	Dir
	Symlink
	CharDev
	BlockDev
	FIFO
	Socket
)

func (t FileType) String() string {
	switch t {
	case Regular:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	case CharDev:
		return "chardev"
	case BlockDev:
		return "blockdev"
	case FIFO:
		return "fifo"
	case Socket:
		return "socket"
	}
	return "unknown"
}

// Entry describes one file as recorded in the filesystem's metadata.
type Entry struct {
	Path         string // absolute, slash-separated, guest path ("/etc/passwd")
	Type         FileType
	Mode         uint32 // permission bits incl. setuid/setgid/sticky (07777), no type bits
	UID, GID     uint32
	Size         int64
	Mtime, Ctime time.Time
	Inode        uint64
	Nlink        uint32
	LinkTarget   string            // symlinks (fast and slow)
	Xattrs       map[string][]byte // full names ("security.capability"); nil when none
}

// FS is a read-only filesystem inside a disk image.
type FS interface {
	// Walk visits every entry under root ("/" for all) in lexical order per directory.
	// A per-path error (corrupt inode/dir) is passed to fn with e == nil and the walk
	// goes on; fn returning an error stops the walk. filepath.SkipDir on a directory
	// skips it.
	Walk(ctx context.Context, root string, fn func(path string, e *Entry, err error) error) error
	// Lstat describes path without following a final symlink.
	Lstat(path string) (*Entry, error)
	// Open returns the contents of a regular file (sparse holes read as zeros).
	Open(path string) (io.ReadCloser, error)
}
