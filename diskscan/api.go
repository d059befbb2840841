package diskscan

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrUnsupportedFS is returned by OpenFS when no supported filesystem is found.
var ErrUnsupportedFS = errors.New("unsupported or unknown filesystem")

// ErrCorrupt marks metadata that fails a consistency check (bad magic, out-of-range
// block, loop in a tree, ...). Errors that match it name the structure and offset.
var ErrCorrupt = errors.New("corrupt or inconsistent metadata")

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
