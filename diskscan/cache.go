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
// contents bypass it. Memory is bounded by maxChunks*chunkSize. Safe for concurrent use.
type chunkCache struct {
	r         io.ReaderAt
	size      int64 // readable bytes of r
	chunkSize int64
	maxChunks int

	mu    sync.Mutex
	lru   *list.List // of *chunk, front = most recent
	items map[int64]*list.Element
}

type chunk struct {
	off  int64
	data []byte // len may be < chunkSize at the end of r
}

func newChunkCache(r io.ReaderAt, size, chunkSize int64, maxChunks int) *chunkCache {
	return &chunkCache{r: r, size: size, chunkSize: chunkSize, maxChunks: maxChunks,
		lru: list.New(), items: make(map[int64]*list.Element)}
}

// get returns the chunk holding off.
func (c *chunkCache) get(off int64) ([]byte, error) {
	base := off - off%c.chunkSize
	c.mu.Lock()
	if el, ok := c.items[base]; ok {
		c.lru.MoveToFront(el)
		d := el.Value.(*chunk).data
		c.mu.Unlock()
		return d, nil
	}
	c.mu.Unlock()

	n := min(c.chunkSize, c.size-base)
	if n <= 0 {
		return nil, fmt.Errorf("reading %#x: beyond end of volume (%#x): %w", off, c.size, io.ErrUnexpectedEOF)
	}
	buf := make([]byte, n)
	if _, err := c.r.ReadAt(buf, base); err != nil {
		return nil, fmt.Errorf("reading %#x+%#x: %w", base, n, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[base]; ok {
		el.Value.(*chunk).data = buf
		c.lru.MoveToFront(el)
		return buf, nil
	}
	c.items[base] = c.lru.PushFront(&chunk{off: base, data: buf})
	for c.lru.Len() > c.maxChunks {
		el := c.lru.Back()
		c.lru.Remove(el)
		delete(c.items, el.Value.(*chunk).off)
	}
	return buf, nil
}

// read copies len(p) bytes at off into p through the cache.
func (c *chunkCache) read(p []byte, off int64) error {
	if off < 0 || int64(len(p)) > c.size || off > c.size-int64(len(p)) {
		return corruptf("volume", off, "reading %#x bytes: outside volume (%#x bytes)", len(p), c.size)
	}
	for len(p) > 0 {
		d, err := c.get(off)
		if err != nil {
			return err
		}
		in := off % c.chunkSize
		if in >= int64(len(d)) {
			return fmt.Errorf("reading %#x: short chunk: %w", off, io.ErrUnexpectedEOF)
		}
		n := copy(p, d[in:])
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
		}
	}
}
