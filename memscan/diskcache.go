package memscan

import (
	"container/list"
	"sync"
)

// A disk source's small-read cache. Guest-semantics work (finding the Linux layout:
// kallsyms, BTF, page-table and list walks; seam reads) reads a few bytes at a time at
// scattered addresses, and through O_DIRECT every such read is a device request of its
// own: a Linux target's layout through a disk: source took minutes under TCG. Reads
// shorter than a cache block go through a small LRU of aligned device blocks instead.
//
// Staleness: the cache is emptied whenever a new walk of the source begins, which every
// walk announces by asking for the source's Ranges (the scan driver's Pass does so first;
// so does memscan/linux when it derives a layout), and by Invalidate. Within one pass a
// cached block is at most as old as the pass, as any byte a physical pass reads is;
// across passes nothing is served from the cache. Reads of a block or more (the scan's
// windows) never use it.
//
// Sizes, on a Debian 6.1 guest's 384 MiB RAM (layout, processes, attribution, seams;
// TestDiskCacheGuestRAM): no cache 203757 device requests; 128 blocks (8 MiB) 2195
// requests, 1419 of them cache misses; 1024 blocks (64 MiB) 1523, 747 misses, and only
// 10% less time. The rest are the layout search's reads of all RAM in 1 MiB chunks.
const (
	diskCacheBlock  = 64 << 10 // bytes per cached block, a multiple of any logical block size we accept
	diskCacheBlocks = 128      // blocks kept: 8 MiB
)

type diskCacheEntry struct {
	off  int64  // device offset, a multiple of diskCacheBlock
	buf  []byte // page-aligned, diskCacheBlock bytes
	n    int    // valid bytes (short at the device's end)
	elem *list.Element
}

type diskCache struct {
	mu      sync.Mutex
	gen     uint64 // incremented by invalidate: a block read under an older one is not kept
	entries map[int64]*diskCacheEntry
	lru     list.List // of *diskCacheEntry, most recent first
	bufs    sync.Pool // *[]byte of diskCacheBlock bytes, page-aligned
	hits    uint64
	misses  uint64
}

func newDiskCache() *diskCache {
	c := &diskCache{entries: make(map[int64]*diskCacheEntry)}
	c.bufs.New = func() any { b := alignedBuf(diskCacheBlock); return &b }
	return c
}

// invalidate forgets every block.
func (c *diskCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, e := range c.entries {
		b := e.buf
		c.bufs.Put(&b)
	}
	clear(c.entries)
	c.lru.Init()
}

// copyFrom copies the device bytes at [pos, pos+len(p)) into p from the cached block
// holding them, if there is one and it has them all, and says whether it did.
func (c *diskCache) copyFrom(p []byte, pos int64) bool {
	blk := pos &^ (diskCacheBlock - 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[blk]
	if !ok || pos-blk+int64(len(p)) > int64(e.n) {
		return false
	}
	c.lru.MoveToFront(e.elem)
	copy(p, e.buf[pos-blk:])
	c.hits++
	return true
}

// fill reads the block at blk (a multiple of diskCacheBlock) with read, keeps it unless
// the cache was invalidated meanwhile, and copies the device bytes at [pos,
// pos+len(p)) from it into p. It returns false when the block could not be read whole
// up to those bytes (the caller then reads directly and reports the error).
func (c *diskCache) fill(p []byte, pos, blk int64, read func(buf []byte, off int64) (int, error)) bool {
	c.mu.Lock()
	gen := c.gen
	c.misses++
	c.mu.Unlock()
	bp := c.bufs.Get().(*[]byte)
	buf := *bp
	n, err := read(buf, blk)
	_ = err // a short read (the device's end, an I/O error) is kept up to its length
	if n < 0 || n > len(buf) || pos-blk+int64(len(p)) > int64(n) {
		c.bufs.Put(bp)
		return false
	}
	copy(p, buf[pos-blk:])
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.entries[blk]; dup || c.gen != gen {
		c.bufs.Put(bp)
		return true
	}
	if c.lru.Len() >= diskCacheBlocks {
		old := c.lru.Remove(c.lru.Back()).(*diskCacheEntry)
		delete(c.entries, old.off)
		b := old.buf
		c.bufs.Put(&b)
	}
	e := &diskCacheEntry{off: blk, buf: buf, n: n}
	e.elem = c.lru.PushFront(e)
	c.entries[blk] = e
	return true
}

// stats returns the cache's hits and misses.
func (c *diskCache) stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
