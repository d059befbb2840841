package diskscan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/domainm/domainm/diskscan/ext4test"
	"github.com/domainm/domainm/internal/mmap"
)

// chunkHash hashes what it is written and records the largest Write.
type chunkHash struct {
	sum interface {
		io.Writer
		Sum([]byte) []byte
	}
	largest int
}

func (c *chunkHash) Write(p []byte) (int, error) {
	c.largest = max(c.largest, len(p))
	return c.sum.Write(p)
}

// TestMappedImageMatchesReads: files of a raw image are hashed from its mapping (the
// FS found it through the partition's section), and every one hashes as it does when
// read with preads from an unmapped image.
func TestMappedImageMatchesReads(t *testing.T) {
	dir := images(t)
	for _, c := range []struct {
		image string
		base  int64
	}{{"ext4.raw", 0}, {"ext3-1k.raw", 0}, {"gpt.raw", 6 << 20}, {"mbr.raw", 10 << 20}} {
		t.Run(c.image, func(t *testing.T) {
			path := filepath.Join(dir, c.image)
			fs, closer, err := OpenVolumeFormat(path, "raw", -1)
			must(t, err)
			defer closer.Close()
			e := fs.(*ext4FS)
			if e.mem == nil || e.memBase != c.base || e.memLimit <= 0 {
				t.Fatalf("mapping %v, base %#x (want %#x), limit %#x", e.mem != nil, e.memBase, c.base, e.memLimit)
			}
			e.resident = nil // read all from the mapping, cached or not
			mapImages = false
			plain, pcloser, err := OpenVolumeFormat(path, "raw", -1)
			mapImages = true
			must(t, err)
			defer pcloser.Close()
			if plain.(*ext4FS).mem != nil {
				t.Fatal("mapImages=false still mapped the image")
			}
			got, _ := walkAll(t, fs)
			files := 0
			for p, ent := range got {
				if ent.Type != Regular || ent.Size > 64<<20 {
					continue
				}
				files++
				r, err := fs.Open(p)
				must(t, err)
				w := &chunkHash{sum: sha256.New()}
				n, err := r.(io.WriterTo).WriteTo(w)
				r.Close()
				must(t, err)
				if n != ent.Size {
					t.Errorf("%s: WriteTo wrote %d bytes of %d", p, n, ent.Size)
				}
				if w.largest > mapChunk {
					t.Errorf("%s: a Write of %d bytes, more than mapChunk", p, w.largest)
				}
				pr, err := plain.Open(p)
				must(t, err)
				h := sha256.New()
				_, err = io.Copy(h, struct{ io.Reader }{pr}) // Read only: preads
				pr.Close()
				must(t, err)
				if a, b := hex.EncodeToString(w.sum.Sum(nil)), hex.EncodeToString(h.Sum(nil)); a != b {
					t.Errorf("%s: mapped sha256 %s, read %s", p, a, b)
				}
			}
			if files < 100 {
				t.Fatalf("only %d files compared", files)
			}
			if e.bytesMapped.Load() == 0 || e.bytesRead.Load() != 0 {
				t.Fatalf("%d bytes read from the mapping, %d with preads; want all from the mapping", e.bytesMapped.Load(), e.bytesRead.Load())
			}
		})
	}
}

// copyImage copies a test image (sparse) to a file of the test's own.
func copyImage(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	run(t, "cp", "--sparse=always", filepath.Join(images(t), name), dst)
	return dst
}

// firstBlock is the volume offset of the first extent of p's contents.
func firstBlock(t *testing.T, fs FS, p string) int64 {
	t.Helper()
	r, err := fs.Open(p)
	must(t, err)
	defer r.Close()
	f := r.(*file)
	if len(f.exts) == 0 {
		t.Fatalf("%s has no extents", p)
	}
	return int64(f.exts[0].pblk) * f.fs.bs
}

// TestMappedImageTruncated: the image file shrinks under the mapping while a file is
// hashed from it. The read fails with an error naming the volume offset, holding the
// memory fault; the process does not get SIGBUS.
func TestMappedImageTruncated(t *testing.T) {
	img := copyImage(t, "ext4.raw")
	fs, closer, err := OpenVolumeFormat(img, "raw", -1)
	must(t, err)
	defer closer.Close()
	phys := firstBlock(t, fs, "/bin/big")
	// Read from the mapping, not with preads as pages found missing from the page
	// cache are: a page truncated away is not cached.
	fs.(*ext4FS).resident = nil
	r, err := fs.Open("/bin/big")
	must(t, err)
	defer r.Close()
	must(t, os.Truncate(img, phys))
	_, err = r.(io.WriterTo).WriteTo(sha256.New())
	var fe *mmap.FaultError
	if !errors.As(err, &fe) {
		t.Fatalf("WriteTo after truncation: err = %v, want a *mmap.FaultError", err)
	}
	if want := fmt.Sprintf("volume offset %#x", phys); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %s", err, want)
	}
}

// TestMappedExtentBeyondImage: a volume that claims more than the image holds (a
// partition running past the end of the disk) has files whose extents lie beyond the
// mapping. They are read with preads, which fail cleanly with the offset.
func TestMappedExtentBeyondImage(t *testing.T) {
	img := copyImage(t, "ext4.raw")
	st, err := os.Stat(img)
	must(t, err)
	ref, rc, err := OpenVolumeFormat(img, "raw", -1)
	must(t, err)
	phys := firstBlock(t, ref, "/bin/big")
	rc.Close()
	must(t, os.Truncate(img, phys+4096)) // the first block of /bin/big stays
	im, err := OpenImageFormat(img, "raw")
	must(t, err)
	defer im.Close()
	fs, err := OpenFS(io.NewSectionReader(im, 0, st.Size()), st.Size())
	must(t, err)
	e := fs.(*ext4FS)
	if e.mem == nil || e.memLimit != phys+4096 {
		t.Fatalf("mapping %v, limit %#x, want %#x", e.mem != nil, e.memLimit, phys+4096)
	}
	r, err := fs.Open("/bin/big")
	must(t, err)
	defer r.Close()
	n, err := r.(io.WriterTo).WriteTo(sha256.New())
	var fe *mmap.FaultError
	if err == nil || errors.As(err, &fe) || !strings.Contains(err.Error(), fmt.Sprintf("volume offset %#x", phys)) {
		t.Fatalf("WriteTo of a file beyond the image: %d bytes, err = %v; want a read error at volume offset %#x", n, err, phys)
	}
}

// TestMappedVolumeNested: nested sections narrow the bytes the mapping serves.
func TestMappedVolumeNested(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk")
	must(t, os.WriteFile(path, make([]byte, 1<<20), 0o600))
	im, err := OpenImageFormat(path, "raw")
	must(t, err)
	defer im.Close()
	outer := io.NewSectionReader(im, 4096, 65536)
	for _, c := range []struct {
		r           io.ReaderAt
		base, limit int64
		mapped      bool
	}{
		{im, 0, 1 << 20, true},
		{outer, 4096, 65536, true},
		{io.NewSectionReader(outer, 8192, 1<<20), 4096 + 8192, 65536 - 8192, true},
		{io.NewSectionReader(im, 1<<20-100, 1<<30), 1<<20 - 100, 100, true},
		{io.NewSectionReader(outer, 65536, 10), 0, 0, false}, // past the outer section
		{io.NewSectionReader(im, 2<<20, 10), 0, 0, false},    // past the image
	} {
		m, base, limit := mappedVolume(c.r)
		if (m != nil) != c.mapped || base != c.base || limit != c.limit {
			t.Errorf("mappedVolume: mapped %v base %#x limit %#x, want %v %#x %#x", m != nil, base, limit, c.mapped, c.base, c.limit)
		}
	}
}

// evict drops path's pages from the page cache (written back first), as after a reboot
// of the host or memory pressure.
func evict(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	must(t, f.Sync())
	const fadvDontNeed = 4
	if _, _, e := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0); e != 0 {
		t.Fatalf("posix_fadvise: %v", e)
	}
}

// TestMappedUncachedReadsWithPreads: contents of a raw image that are not in the page
// cache are read with preads (a fault that waits for the device would hold a Go
// processor), the same bytes as from the mapping; after the next walk begins, they are
// found cached and read from the mapping.
func TestMappedUncachedReadsWithPreads(t *testing.T) {
	img := copyImage(t, "ext4.raw")
	fs, closer, err := OpenVolumeFormat(img, "raw", -1)
	must(t, err)
	defer closer.Close()
	e := fs.(*ext4FS)
	if e.mem == nil || e.resident == nil {
		t.Fatal("the image is not mapped")
	}
	mapImages = false
	plain, pcloser, err := OpenVolumeFormat(img, "raw", -1)
	mapImages = true
	must(t, err)
	defer pcloser.Close()
	const p = "/bin/big"
	want := hashFile(t, plain, p)
	phys := firstBlock(t, fs, p)
	ent, err := fs.Lstat(p)
	must(t, err)
	hash := func() {
		t.Helper()
		r, err := fs.Open(p)
		must(t, err)
		defer r.Close()
		h := sha256.New()
		_, err = r.(io.WriterTo).WriteTo(h)
		must(t, err)
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			t.Fatalf("%s: sha256 %s, read with preads %s", p, got, want)
		}
	}

	evict(t, img)
	if ok, _ := e.mem.Resident(e.memBase+phys, ent.Size); ok {
		t.Skipf("the page cache kept %s after POSIX_FADV_DONTNEED (a tmpfs TMPDIR?): cannot test an uncached image", img)
	}
	hash()
	mapped, read := e.bytesMapped.Load(), e.bytesRead.Load()
	// The first MiB is read with preads; the kernel's readahead may bring the rest in
	// before the next region (8 MiB) is sampled.
	if read < mapChunk || mapped+read != ent.Size {
		t.Fatalf("uncached: %d bytes read from the mapping, %d with preads, of %d; want at least %d with preads", mapped, read, ent.Size, mapChunk)
	}
	hash() // same walk: what was found uncached is still read with preads
	if m, r := e.bytesMapped.Load()-mapped, e.bytesRead.Load()-read; m != mapped || r != read {
		t.Fatalf("again in the same walk: %d bytes from the mapping, %d with preads; want %d and %d", m, r, mapped, read)
	}
	// A new walk samples the page cache again: with the whole image cached it reads
	// from the mapping (TestColdWalkReadsWithPreads: a walk that begins on an uncached
	// image reads everything with preads).
	warmFile(t, img)
	walkAll(t, fs)
	mapped, read = e.bytesMapped.Load(), e.bytesRead.Load()
	hash()
	if m, r := e.bytesMapped.Load()-mapped, e.bytesRead.Load()-read; m != ent.Size || r != 0 {
		t.Fatalf("cached, next walk: %d bytes from the mapping, %d with preads; want all %d from the mapping", m, r, ent.Size)
	}
}

// warmFile reads path whole, so that the page cache holds it.
func warmFile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	must(t, err)
}

// TestColdWalkReadsWithPreads: a walk that begins on a mostly uncached image reads every
// file's contents with preads, also a file whose pages are in the page cache (as the
// readahead that the walk's metadata reads start leaves them, often still in flight);
// a walk that begins on a cached image reads them from the mapping. Same bytes either
// way.
func TestColdWalkReadsWithPreads(t *testing.T) {
	rnd := rand.New(rand.NewSource(15))
	files := map[string]string{}
	want := map[string]string{}
	var total int64
	for i := range 12 {
		b := make([]byte, 2<<20+i*4096)
		rnd.Read(b)
		p := fmt.Sprintf("d/f%02d", i)
		files[p] = string(b)
		sum := sha256.Sum256(b)
		want["/"+p] = hex.EncodeToString(sum[:])
		total += int64(len(b))
	}
	img := ext4test.Image(t, files, 64)
	fs, closer, err := OpenVolumeFormat(img, "raw", -1)
	must(t, err)
	defer closer.Close()
	e := fs.(*ext4FS)
	if e.mem == nil || e.resident == nil {
		t.Fatal("the image is not mapped")
	}
	if e.usedFraction < 0.3 || e.usedFraction > 0.9 {
		t.Fatalf("used fraction %.2f from the superblock, want about 0.45", e.usedFraction)
	}
	const p = "/d/f00"
	phys := firstBlock(t, fs, p)
	ent, err := fs.Lstat(p)
	must(t, err)
	if r, err := fs.Open(p); err != nil || len(r.(*file).exts) != 1 {
		t.Fatalf("%s: %v, want one extent", p, err)
	}
	walkHash := func() (mapped, read int64) {
		t.Helper()
		m0, r0 := e.bytesMapped.Load(), e.bytesRead.Load()
		n := 0
		err := fs.Walk(context.Background(), "/", func(path string, ent *Entry, err error) error {
			must(t, err)
			if ent.Type != Regular || !strings.HasPrefix(path, "/d/") {
				return nil
			}
			r, err := fs.Open(path)
			must(t, err)
			defer r.Close()
			h := sha256.New()
			_, err = r.(io.WriterTo).WriteTo(h)
			must(t, err)
			if got := hex.EncodeToString(h.Sum(nil)); got != want[path] {
				t.Fatalf("%s: sha256 %s, want %s", path, got, want[path])
			}
			n++
			return nil
		})
		must(t, err)
		if n != len(want) {
			t.Fatalf("hashed %d files, want %d", n, len(want))
		}
		return e.bytesMapped.Load() - m0, e.bytesRead.Load() - r0
	}

	evict(t, img)
	if ok, _ := e.mem.Resident(e.memBase+phys, ent.Size); ok {
		t.Skipf("the page cache kept %s after POSIX_FADV_DONTNEED (a tmpfs TMPDIR?): cannot test an uncached image", img)
	}
	// Bring one file's contents in, as readahead would.
	f, err := os.Open(img)
	must(t, err)
	_, err = f.ReadAt(make([]byte, ent.Size), e.memBase+phys)
	f.Close()
	must(t, err)
	if ok, _ := e.mem.Resident(e.memBase+phys, ent.Size); !ok {
		t.Fatalf("%s not in the page cache after reading it", p)
	}
	if m, r := walkHash(); m != 0 || r != total || !e.walkPreads.Load() {
		t.Fatalf("walk begun uncached: %d bytes from the mapping, %d with preads (preads for the walk: %v); want all %d with preads", m, r, e.walkPreads.Load(), total)
	}

	warmFile(t, img)
	if m, r := walkHash(); m != total || r != 0 || e.walkPreads.Load() {
		t.Fatalf("walk begun cached: %d bytes from the mapping, %d with preads (preads for the walk: %v); want all %d from the mapping", m, r, e.walkPreads.Load(), total)
	}
}

// presentPages counts the pages of b that this process has mapped (page-table entries
// present, /proc/self/pagemap bit 63), not whether the page cache holds them.
func presentPages(t *testing.T, b []byte) int {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	must(t, err)
	defer f.Close()
	page := uintptr(os.Getpagesize())
	start := reflect.ValueOf(b).Pointer()
	ents := make([]byte, 8*((uintptr(len(b))+page-1)/page))
	_, err = f.ReadAt(ents, int64(start/page*8))
	must(t, err)
	n := 0
	for i := 0; i < len(ents); i += 8 {
		if ents[i+7]&0x80 != 0 {
			n++
		}
	}
	return n
}

// TestReleaseSpanRead: hashing from the mapping releases the pages read behind it, so
// that this process maps at most about releaseEvery bytes of the image, and the first
// file's pages are gone once the later files have been read. (Releasing only the span
// read since the last release instead of the whole mapping saved nothing measurable:
// madvise's cost is the pages it unmaps.)
func TestReleaseSpanRead(t *testing.T) {
	rnd := rand.New(rand.NewSource(16))
	files := map[string]string{}
	for i := range 12 {
		b := make([]byte, 2<<20+i*4096)
		rnd.Read(b)
		files[fmt.Sprintf("d/f%02d", i)] = string(b)
	}
	img := ext4test.Image(t, files, 64)
	fs, closer, err := OpenVolumeFormat(img, "raw", -1)
	must(t, err)
	defer closer.Close()
	e := fs.(*ext4FS)
	if e.mem == nil {
		t.Fatal("the image is not mapped")
	}
	e.resident = nil // read all from the mapping
	mem := e.mem.Bytes()[e.memBase : e.memBase+e.memLimit]
	if n := presentPages(t, mem); n > 64 {
		t.Fatalf("%d pages of the image mapped before reading", n)
	}
	first := firstBlock(t, fs, "/d/f00")
	ent, err := fs.Lstat("/d/f00")
	must(t, err)
	page := int64(os.Getpagesize())
	most := 0
	for i := range 12 {
		p := fmt.Sprintf("/d/f%02d", i)
		r, err := fs.Open(p)
		must(t, err)
		_, err = r.(io.WriterTo).WriteTo(sha256.New()) // touches every byte
		must(t, err)
		r.Close()
		if i == 0 && presentPages(t, mem[first:first+ent.Size]) == 0 {
			t.Fatalf("%s: no page of it mapped after reading it from the mapping", p)
		}
		most = max(most, presentPages(t, mem))
	}
	if e.bytesMapped.Load() < 24<<20 {
		t.Fatalf("%d bytes read from the mapping, want all 24 MiB", e.bytesMapped.Load())
	}
	if n := presentPages(t, mem[first:first+ent.Size]); n != 0 {
		t.Errorf("%d pages of /d/f00 still mapped after 22 MiB more were read", n)
	}
	if limit := int((releaseEvery + 4<<20) / page); most > limit {
		t.Errorf("up to %d pages of the image mapped at once, want at most %d (releaseEvery + 4 MiB)", most, limit)
	}
}
