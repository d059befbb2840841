package diskscan

import (
	"bytes"
	"container/list"
	"fmt"
	"io"
	"sync"
)

// chunkCache is a read-through LRU cache of aligned chunks of an io.ReaderAt, used for
// filesystem metadata (inode tables, directory, extent, indirect and xattr blocks). File
// contents bypass it. Memory is bounded by (maxChunks+maxFreeChunks)*chunkSize. Safe for
// concurrent use.
//
// Chunk buffers are recycled: an evicted chunk's buffer takes the next miss's read, so a
// walk does not allocate (and clear) a new chunk per miss (a baseline of the bench image
// missed 2,700 times: 180 MB). This is safe because no slice of a cached chunk leaves
// the cache: read copies out of it with mu held, and a buffer is only put on the free
// list, or taken from it, with mu held.
type chunkCache struct {
	r         io.ReaderAt
	size      int64 // readable bytes of r
	chunkSize int64
	maxChunks int

	mu    sync.Mutex
	lru   *list.List // of *chunk, front = most recent
	items map[int64]*list.Element
	free  [][]byte // buffers of evicted chunks (cap chunkSize), at most maxFreeChunks
}

// maxFreeChunks bounds the free list: a miss at steady state evicts one chunk and
// takes one buffer, so a few cover the readers that miss at the same time.
const maxFreeChunks = 8

type chunk struct {
	off  int64
	data []byte // len may be < chunkSize at the end of r
}

func newChunkCache(r io.ReaderAt, size, chunkSize int64, maxChunks int) *chunkCache {
	return &chunkCache{r: r, size: size, chunkSize: chunkSize, maxChunks: maxChunks,
		lru: list.New(), items: make(map[int64]*list.Element)}
}

// recycle puts a buffer no chunk refers to any more on the free list. mu is held.
func (c *chunkCache) recycle(b []byte) {
	if int64(cap(b)) == c.chunkSize && len(c.free) < maxFreeChunks {
		c.free = append(c.free, b[:0])
	}
}

// copyAt copies the bytes of the cached chunk at base from offset in into p and moves
// the chunk to the front. mu is held.
func (c *chunkCache) copyAt(p []byte, el *list.Element, in int64) (int, error) {
	c.lru.MoveToFront(el)
	d := el.Value.(*chunk).data
	if in >= int64(len(d)) {
		return 0, fmt.Errorf("reading %#x: short chunk: %w", el.Value.(*chunk).off+in, io.ErrUnexpectedEOF)
	}
	return copy(p, d[in:]), nil
}

// fill copies what it can of [off, off+len(p)) from the chunk holding off into p,
// reading the chunk on a miss.
func (c *chunkCache) fill(p []byte, off int64) (int, error) {
	base := off - off%c.chunkSize
	in := off - base
	c.mu.Lock()
	if el, ok := c.items[base]; ok {
		n, err := c.copyAt(p, el, in)
		c.mu.Unlock()
		return n, err
	}
	n := min(c.chunkSize, c.size-base)
	if n <= 0 {
		c.mu.Unlock()
		return 0, fmt.Errorf("reading %#x: beyond end of volume (%#x): %w", off, c.size, io.ErrUnexpectedEOF)
	}
	var buf []byte
	if k := len(c.free); k > 0 {
		buf, c.free = c.free[k-1], c.free[:k-1]
	}
	c.mu.Unlock()

	if buf == nil {
		buf = make([]byte, n, c.chunkSize)
	}
	buf = buf[:n]
	if _, err := c.r.ReadAt(buf, base); err != nil {
		c.mu.Lock()
		c.recycle(buf)
		c.mu.Unlock()
		return 0, fmt.Errorf("reading %#x+%#x: %w", base, n, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[base]
	if ok { // read meanwhile by another reader: keep the fresher bytes
		ch := el.Value.(*chunk)
		c.recycle(ch.data)
		ch.data = buf
	} else {
		el = c.lru.PushFront(&chunk{off: base, data: buf})
		c.items[base] = el
		for c.lru.Len() > c.maxChunks {
			old := c.lru.Back()
			c.lru.Remove(old)
			ch := old.Value.(*chunk)
			delete(c.items, ch.off)
			c.recycle(ch.data)
		}
	}
	return c.copyAt(p, el, in)
}

// read copies len(p) bytes at off into p through the cache.
func (c *chunkCache) read(p []byte, off int64) error {
	if off < 0 || int64(len(p)) > c.size || off > c.size-int64(len(p)) {
		return corruptf("volume", off, "reading %#x bytes: outside volume (%#x bytes)", len(p), c.size)
	}
	for len(p) > 0 {
		n, err := c.fill(p, off)
		if err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// dropIfStale removes cached chunks whose copy of [off, off+len(p)) differs from p, the
// bytes just read from the volume.
func (c *chunkCache) dropIfStale(p []byte, off int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for base := off - off%c.chunkSize; base < off+int64(len(p)); base += c.chunkSize {
		el, ok := c.items[base]
		if !ok {
			continue
		}
		d := el.Value.(*chunk).data
		lo, hi := max(off, base), min(off+int64(len(p)), base+int64(len(d)))
		if lo < hi && !bytes.Equal(d[lo-base:hi-base], p[lo-off:hi-off]) {
			c.lru.Remove(el)
			delete(c.items, base)
			c.recycle(d)
		}
	}
}
