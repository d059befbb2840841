package memscan

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/zeebo/xxh3"
)

// TestCopyHash: copyHash copies its source and returns xxh3.HashSeed of the copy, for
// every length around XXH3's stripe (64), block (1 KiB) and short-input (240) limits
// and the driver's window sizes, at unaligned offsets, whatever the seed.
func TestCopyHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]byte, DefaultBlockSize+DefaultOverlap+64)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	var lens []int
	for n := 0; n <= 3*1024+130; n++ {
		lens = append(lens, n)
	}
	lens = append(lens, 64<<10, 64<<10+1, DefaultBlockSize-1, DefaultBlockSize, DefaultBlockSize+DefaultOverlap)
	for _, seed := range []uint64{0, 1, rng.Uint64()} {
		secret := newHashSecret(seed)
		for _, n := range lens {
			off := n % 7
			in := src[off : off+n]
			dst := make([]byte, n+9)
			for i := range dst {
				dst[i] = 0xaa
			}
			got := copyHash(dst[3:], in, seed, secret)
			if want := xxh3.HashSeed(in, seed); got != want {
				t.Fatalf("seed %#x, %d bytes: copyHash %#x, xxh3.HashSeed %#x", seed, n, got, want)
			}
			if !bytes.Equal(dst[3:3+n], in) {
				t.Fatalf("seed %#x, %d bytes: copy differs", seed, n)
			}
			if !bytes.Equal(dst[:3], []byte{0xaa, 0xaa, 0xaa}) || !bytes.Equal(dst[3+n:], bytes.Repeat([]byte{0xaa}, 6)) {
				t.Fatalf("seed %#x, %d bytes: wrote outside the copy", seed, n)
			}
		}
	}
	if !copyAccumOK {
		t.Logf("no AVX2 here: copyHash copies and then hashes")
	}
}

func BenchmarkCopyHash(b *testing.B) {
	src := make([]byte, DefaultBlockSize+DefaultOverlap)
	for i := range src {
		src[i] = byte(i * 7)
	}
	dst := make([]byte, len(src))
	secret := newHashSecret(42)
	b.Run("fused", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		for range b.N {
			copyHash(dst, src, 42, secret)
		}
	})
	b.Run("copy+hash", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		for range b.N {
			copy(dst, src)
			xxh3.HashSeed(dst, 42)
		}
	})
}

// TestCopyHashTruncatedUnderMapping: the fused copy reads a RAM file's mapping in
// assembly; a file that shrank under it gives View an error for the window, not a
// SIGBUS crash, and a window below the new end still copies and hashes.
func TestCopyHashTruncatedUnderMapping(t *testing.T) {
	path := writeSparse(t, 1*mib, map[int64]string{0: "HEAD", mib - 4: "TAIL"})
	src, err := OpenFile(path, Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	secret := newHashSecret(7)
	buf := make([]byte, 64<<10)
	if err := src.View(0, len(buf), func(mem []byte) { copyHash(buf, mem, 7, secret) }); err == nil {
		t.Fatal("copying past the truncated end succeeded")
	}
	var h uint64
	if err := src.View(0, 4096, func(mem []byte) { h = copyHash(buf, mem, 7, secret) }); err != nil {
		t.Fatalf("copying below the truncated end: %v", err)
	}
	if string(buf[:4]) != "HEAD" || h != xxh3.HashSeed(buf[:4096], 7) {
		t.Fatalf("copy %q, hash %#x", buf[:4], h)
	}
}
