package diskscan

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentUse hashes every regular file from several goroutines at once, while two
// walks run, on a qcow2 image (L2 cache and metadata cache shared), and compares with the
// hashes read one at a time.
func TestConcurrentUse(t *testing.T) {
	dir := images(t)
	fs, c, err := OpenVolume(filepath.Join(dir, "gpt.qcow2"), -1)
	must(t, err)
	defer c.Close()
	want := map[string]string{}
	got, _ := walkAll(t, fs)
	for p, e := range got {
		if e.Type == Regular && e.Size < 64<<20 {
			want[p] = hashFile(t, fs, p)
		}
	}
	fs2, c2, err := OpenVolume(filepath.Join(dir, "gpt.qcow2"), -1) // cold caches
	must(t, err)
	defer c2.Close()
	paths := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	gotHash := map[string]string{}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range paths {
				h := hashFile(t, fs2, p)
				mu.Lock()
				gotHash[p] = h
				mu.Unlock()
			}
		}()
	}
	var walked atomic.Int64
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fs2.Walk(context.Background(), "/", func(string, *Entry, error) error { walked.Add(1); return nil })
		}()
	}
	for p := range want {
		paths <- p
	}
	close(paths)
	wg.Wait()
	for p, h := range want {
		if gotHash[p] != h {
			t.Errorf("%s: concurrent hash %s, sequential %s", p, gotHash[p], h)
		}
	}
	if n := walked.Load(); n != 2*int64(len(got)) {
		t.Errorf("concurrent walks saw %d entries, want %d", n, 2*len(got))
	}
}

// flakyReader returns damaged bytes for [off, off+n) on the first `bad` reads that touch
// the range, as if the guest were rewriting that metadata while we read it.
type flakyReader struct {
	r      *bytes.Reader
	off, n int64
	mu     sync.Mutex
	bad    int
}

func (f *flakyReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.r.ReadAt(p, off)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bad > 0 && off < f.off+f.n && off+int64(n) > f.off {
		f.bad--
		for i := range p[:n] {
			if o := off + int64(i); o >= f.off && o < f.off+f.n {
				p[i] ^= 0xA5
			}
		}
	}
	return n, err
}

// TestInconsistentMetadataRetried: an inode-table block that reads garbage once and
// correct afterwards must give the correct entries (retry with fresh reads); one that
// stays garbage must give per-path errors, and the walk goes on with the rest.
func TestInconsistentMetadataRetried(t *testing.T) {
	dir := images(t)
	img := readAll(t, filepath.Join(dir, "ext4.raw"))
	good, _ := walkAll(t, mustFS(t, bytes.NewReader(img), int64(len(img))))
	fs0 := mustFS(t, bytes.NewReader(img), int64(len(img))).(*ext4FS)
	in, err := fs0.lookup(fs0.newOp(false), "/bin/su", false)
	must(t, err)
	it, err := fs0.newOp(false).inodeTable(uint64(in.ino-1) / fs0.inodesPerGroup)
	must(t, err)
	off := int64(it)*fs0.bs + int64(uint64(in.ino-1)%fs0.inodesPerGroup)*fs0.inodeSize

	for _, c := range []struct {
		bad     int
		wantErr bool
	}{{1, false}, {1000, true}} {
		fr := &flakyReader{r: bytes.NewReader(img), off: off, n: fs0.inodeSize}
		fs := mustFS(t, fr, int64(len(img)))
		fr.bad = c.bad // after the superblock was read
		var errPaths []string
		n := 0
		start := time.Now()
		err := fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
			n++
			if err != nil {
				errPaths = append(errPaths, p)
				return nil
			}
			if g := good[p]; g != nil && (g.Mode != e.Mode || g.Size != e.Size || g.Inode != e.Inode) {
				t.Errorf("bad=%d: %s: got %+v, want %+v", c.bad, p, e, g)
			}
			return nil
		})
		must(t, err)
		if c.wantErr {
			// Both names of the hard-linked inode fail; every other path is still walked.
			if len(errPaths) != 2 || n != len(good)+0 {
				t.Errorf("bad=%d: error paths %v, %d callbacks for %d entries", c.bad, errPaths, n, len(good))
			}
		} else if len(errPaths) != 0 || n != len(good) {
			t.Errorf("bad=%d: error paths %v, %d entries, want none and %d", c.bad, errPaths, n, len(good))
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("walk took %v", d)
		}
	}
}

func mustFS(t *testing.T, r interface {
	ReadAt([]byte, int64) (int, error)
}, size int64) FS {
	fs, err := OpenFS(r, size)
	must(t, err)
	return fs
}

// TestChecksumMismatchDetected flips a byte of an inode field the reader does not use
// (i_version at 0x24), then a byte of an xattr value: only the metadata_csum checks can
// notice, and they must.
func TestChecksumMismatchDetected(t *testing.T) {
	dir := images(t)
	img := readAll(t, filepath.Join(dir, "ext4.raw"))
	fs0 := mustFS(t, bytes.NewReader(img), int64(len(img))).(*ext4FS)
	if !fs0.csums() {
		t.Fatal("ext4.raw has no metadata_csum; mke2fs defaults changed?")
	}
	in, err := fs0.lookup(fs0.newOp(false), "/etc/passwd", false)
	must(t, err)
	it, err := fs0.newOp(false).inodeTable(uint64(in.ino-1) / fs0.inodesPerGroup)
	must(t, err)
	img[int64(it)*fs0.bs+int64(uint64(in.ino-1)%fs0.inodesPerGroup)*fs0.inodeSize+0x24] ^= 1
	fs := mustFS(t, bytes.NewReader(img), int64(len(img)))
	if _, err := fs.Lstat("/etc/passwd"); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("Lstat of an inode with a bad checksum: %v", err)
	}
	if _, err := fs.Lstat("/etc"); err != nil {
		t.Fatalf("neighbour: %v", err)
	}

	// The same for a byte of the value in /etc/passwd's xattr block (user.big).
	img = readAll(t, filepath.Join(dir, "ext4.raw"))
	acl := int64(in.fileACL) * fs0.bs
	i := bytes.Index(img[acl:acl+fs0.bs], bigXattr)
	if in.fileACL == 0 || i < 0 {
		t.Fatal("/etc/passwd: no xattr block with user.big")
	}
	img[acl+int64(i)] ^= 1
	fs = mustFS(t, bytes.NewReader(img), int64(len(img)))
	if _, err := fs.Lstat("/etc/passwd"); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("Lstat with a bad xattr block checksum: %v", err)
	}
}
