package diskscan

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// maxAttempts bounds how often an operation that met inconsistent metadata is retried
// with fresh reads before its error is reported.
const maxAttempts = 3

// retryPolicy is how an FS retries reads of inconsistent metadata. The daemon uses
// defaultRetries: an image may be rewritten while it is read.
type retryPolicy struct {
	attempts     int           // tries of an operation before its error is reported
	rootAttempts int           // tries of the root directory when a volume is opened
	backoff      time.Duration // first wait before a retry; then 4 times longer each, at most 16 times
	maxWait      int64         // total waiting per FS, nanoseconds
}

var defaultRetries = retryPolicy{attempts: maxAttempts, rootAttempts: rootAttempts, backoff: retryBackoff, maxWait: maxRetryWait}

// noRetries tries once and never waits: for inputs that cannot change while they are
// read (the fuzz targets and tests on static images).
var noRetries = retryPolicy{attempts: 1, rootAttempts: 1}

// retries is the policy of the filesystems opened from now on (each FS keeps the one it
// was opened with). Only the package's fuzz targets and tests change it.
var retries = defaultRetries

// retry runs f, and on error runs it again with a fresh view of the metadata, because
// the image may be changing under us (the guest writes while we read). The retries wait
// a little for the writer to finish; the total waiting per FS is capped, so that an
// image full of corrupt inodes cannot slow a scan down by much.
func (fs *ext4FS) retry(f func(o *op) error) error {
	var err error
	for i := 0; i < max(1, fs.retries.attempts); i++ {
		if i > 0 && fs.retryWait.Load() < fs.retries.maxWait {
			d := fs.retries.backoff << (2 * (i - 1)) // 1 ms, then 4 ms
			fs.retryWait.Add(int64(d))
			time.Sleep(d)
		}
		if err = guarded(f, fs.newOp(i > 0)); err == nil || errors.Is(err, iofs.ErrNotExist) {
			return err
		}
	}
	return err
}

const (
	retryBackoff = time.Millisecond
	maxRetryWait = int64(2 * time.Second)
)

// dirCache keeps recent directory listings (sorted) so that path lookups after a walk
// do not re-read and re-sort whole directories. Bounded by the total number of names.
// A listing that came with an error (damaged blocks) is kept with its error: a lookup
// of a name in its good blocks then costs no re-read of the whole directory.
type dirCache struct {
	mu    sync.Mutex
	lru   *list.List // of *dirListing
	items map[uint32]*list.Element
	total int
}

type dirListing struct {
	ino  uint32
	ents []dirent
	err  error
}

const dirCacheEntries = 1 << 18

func (c *dirCache) get(ino uint32) (*dirListing, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[ino]; ok {
		c.lru.MoveToFront(el)
		return el.Value.(*dirListing), true
	}
	return nil, false
}

func (c *dirCache) put(l *dirListing) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.items == nil {
		c.items, c.lru = make(map[uint32]*list.Element), list.New()
	}
	if el, ok := c.items[l.ino]; ok {
		c.total -= len(el.Value.(*dirListing).ents)
		c.lru.Remove(el)
		delete(c.items, l.ino)
	}
	if len(l.ents) > dirCacheEntries {
		return
	}
	c.items[l.ino] = c.lru.PushFront(l)
	c.total += len(l.ents)
	for c.total > dirCacheEntries {
		el := c.lru.Back()
		old := el.Value.(*dirListing)
		c.lru.Remove(el)
		delete(c.items, old.ino)
		c.total -= len(old.ents)
	}
}

// listDir returns the sorted listing of directory inode in, through the cache unless o
// is a fresh (retry) operation; with damaged blocks, the names of the others and the
// error (see readBlockDir).
func (o *op) listDir(in *inode, cache *dirCache) ([]dirent, error) {
	if !o.fresh {
		if l, ok := cache.get(in.ino); ok {
			return l.ents, l.err
		}
	}
	ents, err := o.readDir(in)
	cache.put(&dirListing{ino: in.ino, ents: ents, err: err})
	return ents, err
}

// listing returns the directory listing of inode ino, from the cache when possible.
func (fs *ext4FS) listing(o *op, ino uint32, name string) ([]dirent, error) {
	if !o.fresh {
		if l, ok := fs.dirs.get(ino); ok {
			return l.ents, l.err
		}
	}
	dir, err := o.readInode(ino)
	if err != nil {
		return nil, err
	}
	if dir.fileType() != Dir {
		return nil, fmt.Errorf("%s: parent is not a directory: %w", name, iofs.ErrNotExist)
	}
	return o.listDir(dir, &fs.dirs)
}

// lookup resolves an absolute guest path to its inode. Symlinks in the middle of the path
// are followed inside the guest filesystem (at most 40, as Linux does); the last one only
// with followLast.
func (fs *ext4FS) lookup(o *op, p string, followLast bool) (*inode, error) {
	comps := strings.Split(p, "/")
	stack := []uint32{rootIno}
	hops := 0
	var last *inode // the inode at the top of stack, when already read
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			last = nil
			continue
		}
		last = nil
		ents, lerr := fs.listing(o, stack[len(stack)-1], c)
		i := sort.Search(len(ents), func(i int) bool { return ents[i].name >= c })
		if i == len(ents) || ents[i].name != c {
			if lerr != nil { // the name may be in a damaged block
				return nil, lerr
			}
			return nil, fmt.Errorf("%s: %w", c, iofs.ErrNotExist)
		}
		if ents[i].err != nil {
			return nil, ents[i].err
		}
		if len(comps) > 0 && ents[i].typ == 2 {
			// A directory in the middle of the path: its inode is read (and checked to be
			// a directory) only if its listing is not cached.
			stack = append(stack, ents[i].ino)
			continue
		}
		child, err := o.readInode(ents[i].ino)
		if err != nil {
			return nil, err
		}
		if child.fileType() == Symlink && (len(comps) > 0 || followLast) {
			if hops++; hops > 40 {
				return nil, o.fs.corrupt("ext4 symlink "+inodeName(child.ino), child.off, "%s: too many levels of symbolic links", p)
			}
			x, err := o.xattrs(child)
			if err != nil {
				return nil, err
			}
			t, err := o.symlinkTarget(child, x)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(t, "/") {
				stack = stack[:1]
			}
			comps = append(strings.Split(t, "/"), comps...)
			continue
		}
		stack = append(stack, ents[i].ino)
		last = child
	}
	if last != nil {
		return last, nil
	}
	return o.readInode(stack[len(stack)-1])
}

func cleanPath(p string) string { return path.Clean("/" + p) }

// Lstat describes the file at path; a final symlink is not followed.
func (fs *ext4FS) Lstat(p string) (*Entry, error) {
	p = cleanPath(p)
	var e *Entry
	err := fs.retry(func(o *op) error {
		in, err := fs.lookup(o, p, false)
		if err != nil {
			return err
		}
		e, err = o.entry(in, p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lstat %s: %w", p, err)
	}
	return e, nil
}

// Open opens the regular file at path for reading. A final symlink is not followed (the
// integrity check hashes what is at the path). The reader reads in large chunks straight
// from the volume and may be used concurrently with other readers.
func (fs *ext4FS) Open(p string) (io.ReadCloser, error) {
	p = cleanPath(p)
	var f *file
	err := fs.retry(func(o *op) error {
		in, err := fs.lookup(o, p, false)
		if err != nil {
			return err
		}
		f, err = o.openInode(in)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	return f, nil
}

// OpenInode opens the regular file whose inode number Walk reported in Entry.Inode,
// without looking its path up again: the integrity check hashes the inode whose
// attributes it recorded, and the second lookup of every path was about 5% of a check's
// CPU. Reads are as Open's.
func (fs *ext4FS) OpenInode(ino uint64) (io.ReadCloser, error) {
	if ino == 0 || ino > fs.inodesCount {
		return nil, fmt.Errorf("open inode %d: out of range (1..%d)", ino, fs.inodesCount)
	}
	var f *file
	err := fs.retry(func(o *op) error {
		in, err := o.readInode(uint32(ino))
		if err != nil {
			return err
		}
		f, err = o.openInode(in)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open inode %d: %w", ino, err)
	}
	return f, nil
}

// Walk visits root and everything below it, depth first, in lexical order per directory
// (see FS). A directory inode met twice (a directory hard link or a loop) is reported as
// an error for the second path and not descended into.
func (fs *ext4FS) Walk(ctx context.Context, root string, fn func(string, *Entry, error) error) error {
	root = cleanPath(root)
	fs.startWalk()
	e, err := fs.Lstat(root)
	if err != nil {
		err = fn(root, nil, err)
	} else {
		w := &walker{fs: fs, ctx: ctx, fn: fn, seen: make(map[uint64]bool), bad: make(map[uint32]error)}
		err = w.walk(root, e, 0)
	}
	if err == filepath.SkipDir || err == filepath.SkipAll {
		return nil
	}
	return err
}

type walker struct {
	fs   *ext4FS
	ctx  context.Context
	fn   func(string, *Entry, error) error
	seen map[uint64]bool  // directory inodes entered
	bad  map[uint32]error // inodes that failed after retries: other names reuse the error
}

const maxWalkDepth = 1024

func (w *walker) walk(p string, e *Entry, depth int) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.fn(p, e, nil); err != nil || e.Type != Dir {
		if err == filepath.SkipDir && e.Type == Dir {
			err = nil
		}
		return err
	}
	if w.seen[e.Inode] || depth >= maxWalkDepth {
		err := w.fs.corrupt("ext4 directory "+inodeName(uint32(e.Inode)), w.fs.inodeAt(uint32(e.Inode)), "reached again or nested too deep")
		return skipDirOK(w.fn(p, nil, err))
	}
	w.seen[e.Inode] = true
	var ents []dirent
	derr := w.fs.retry(func(o *op) error {
		in, err := o.readInode(uint32(e.Inode))
		if err != nil {
			return err
		}
		ents, err = o.listDir(in, &w.fs.dirs)
		return err
	})
	if derr != nil {
		if err := skipDirOK(w.fn(p, nil, fmt.Errorf("reading directory %s: %w", p, derr))); err != nil {
			return err
		}
		// Go on with the entries read before the damage.
	}
	for _, d := range ents {
		child := path.Join(p, d.name)
		var err error
		if d.err != nil {
			err = w.fn(child, nil, d.err)
		} else if ce, cerr := w.entry(d.ino, child); cerr != nil {
			err = w.fn(child, nil, cerr)
		} else {
			err = w.walk(child, ce, depth+1)
		}
		if err == filepath.SkipDir {
			break
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func skipDirOK(err error) error {
	if err == filepath.SkipDir {
		return nil
	}
	return err
}

func (w *walker) entry(ino uint32, p string) (*Entry, error) {
	if err := w.bad[ino]; err != nil {
		return nil, err
	}
	var e *Entry
	err := w.fs.retry(func(o *op) error {
		in, err := o.readInode(ino)
		if err != nil {
			return err
		}
		e, err = o.entry(in, p)
		return err
	})
	if err != nil && len(w.bad) < 1<<16 {
		w.bad[ino] = err
	}
	return e, err
}
