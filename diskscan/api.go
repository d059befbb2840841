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
// block, loop in a tree, ...). Errors that match it name the structure and offset.
var ErrCorrupt = errors.New("corrupt or inconsistent metadata")

// recoverCorrupt turns a panic in a parser into an error matching ErrCorrupt. Every
// length and offset is checked, but a bug met on one hostile image must cost that path
// (or that image), not the supervisor. Use it as a deferred call at the entry points.
func recoverCorrupt(err *error, what string) {
	if r := recover(); r != nil {
		if bugsPanic {
			panic(r)
		}
		*err = fmt.Errorf("%s: internal error on this image (%v); please report it: %w", what, r, ErrCorrupt)
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
