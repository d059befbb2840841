package diskscan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// TestChunkCacheReusesBuffers: a miss takes the buffer of the chunk it evicts instead of
// allocating a new chunk (a walk of the bench image missed 2,700 times per baseline:
// 180 MB allocated and cleared).
func TestChunkCacheReusesBuffers(t *testing.T) {
	const cs = 64 << 10
	src := make([]byte, 40*cs+123)
	rand.New(rand.NewSource(1)).Read(src)
	c := newChunkCache(bytes.NewReader(src), int64(len(src)), cs, 4)
	p := make([]byte, 300)
	pass := func() {
		for i := int64(0); i < 39; i++ {
			off := i*cs + cs - 100 // across two chunks: two lookups, one or two misses
			must(t, c.read(p, off))
			if !bytes.Equal(p, src[off:off+int64(len(p))]) {
				t.Fatalf("read at %#x: wrong bytes", off)
			}
		}
	}
	pass()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const passes = 10
	for range passes {
		pass() // about 40 misses a pass: the cache holds 4 chunks
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > cs {
		t.Fatalf("%d bytes allocated for %d misses; want the evicted chunks' buffers reused (< %d bytes)", got, passes*39, cs)
	}
}

// TestChunkCacheConcurrentReads: readers that miss, evict and reuse buffers at the same
// time, on a cache of two chunks, each get the source's bytes, including the short last
// chunk and after dropIfStale.
func TestChunkCacheConcurrentReads(t *testing.T) {
	const cs = 4 << 10
	src := make([]byte, 37*cs+777)
	rand.New(rand.NewSource(2)).Read(src)
	c := newChunkCache(bytes.NewReader(src), int64(len(src)), cs, 2)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(w)))
			for range 3000 {
				n := 1 + rng.Intn(3*cs)
				off := rng.Int63n(int64(len(src) - n + 1))
				p := make([]byte, n)
				if err := c.read(p, off); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(p, src[off:off+int64(n)]) {
					t.Errorf("read %d bytes at %#x: wrong bytes", n, off)
					return
				}
				if rng.Intn(50) == 0 {
					junk := bytes.Repeat([]byte{0xAA}, 10)
					c.dropIfStale(junk, off) // as if the volume had changed: drops the chunk
				}
			}
		})
	}
	wg.Wait()
	if err := c.read(make([]byte, 1), int64(len(src))); err == nil {
		t.Fatal("read beyond the end: no error")
	}
}

// TestTinyMetadataCacheWalk walks and hashes a real ext4 image with a metadata cache of
// two chunks, from four goroutines, so that nearly every metadata read evicts a chunk
// and reuses its buffer, and compares with a walk through the default cache.
func TestTinyMetadataCacheWalk(t *testing.T) {
	img := filepath.Join(images(t), "ext4.raw")
	fs, c, err := OpenVolume(img, -1)
	must(t, err)
	defer c.Close()
	want, _ := walkAll(t, fs)
	wantHash := map[string]string{}
	for p, e := range want {
		if e.Type == Regular && e.Size < 64<<20 {
			wantHash[p] = hashFile(t, fs, p)
		}
	}
	tiny, c2, err := OpenVolume(img, -1)
	must(t, err)
	defer c2.Close()
	e := tiny.(*ext4FS)
	e.cache = newChunkCache(e.cache.r, e.cache.size, metaChunkSize, 2)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			n := 0
			err := tiny.Walk(context.Background(), "/", func(p string, got *Entry, err error) error {
				n++
				if err != nil {
					t.Errorf("walk %s: %v", p, err)
					return nil
				}
				if w := want[p]; w == nil || got.Inode != w.Inode || got.Size != w.Size || got.Mode != w.Mode {
					t.Errorf("%s: entry %+v through a tiny cache, want %+v", p, got, w)
				}
				h, ok := wantHash[p]
				if !ok {
					return nil
				}
				r, err := tiny.Open(p)
				if err != nil {
					t.Errorf("%s: %v", p, err)
					return nil
				}
				defer r.Close()
				sum := sha256.New()
				if _, err := io.Copy(sum, r); err != nil {
					t.Errorf("%s: %v", p, err)
				} else if g := hex.EncodeToString(sum.Sum(nil)); g != h {
					t.Errorf("%s: sha256 %s through a tiny cache, want %s", p, g, h)
				}
				return nil
			})
			if err != nil || n != len(want) {
				t.Errorf("tiny cache: walk %v, %d entries, want %d", err, n, len(want))
			}
		})
	}
	wg.Wait()
}
