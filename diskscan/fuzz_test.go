package diskscan

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// seed returns a seed image from testdata (built by testdata/mkseeds.sh), packed.
func seed(f *testing.F, name string) []byte {
	f.Helper()
	b, err := readGz(filepath.Join("testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	return packImage(b)
}

// The Go fuzzer crawls on inputs much larger than 16 KiB, so fuzz inputs are packed
// images: records of a 2-byte index of a 256-byte unit, a 2-byte length and that many bytes, which
// expandImage writes into a zeroed image. packImage keeps each unit without
// its trailing zeros, so a 128 KiB filesystem packs into a few KiB.
const packUnit = 256

func packImage(img []byte) []byte {
	var out []byte
	for i := 0; i*packUnit < len(img) && i < 1<<16; i++ {
		b := bytes.TrimRight(img[i*packUnit:min((i+1)*packUnit, len(img))], "\x00")
		if len(b) > 0 {
			out = append(out, byte(i), byte(i>>8), byte(len(b)), byte(len(b)>>8))
			out = append(out, b...)
		}
	}
	return out
}

// expandImage makes an image of at least size bytes, larger when the records reach
// further (up to 4 MiB).
func expandImage(data []byte, size int) []byte {
	for d := data; len(d) >= 4; {
		at := (int(d[0]) | int(d[1])<<8) * packUnit
		n := min(int(d[2])|int(d[3])<<8, packUnit, len(d)-4)
		size = max(size, min(at+n, 4<<20))
		d = d[4+n:]
	}
	size = (size + 1023) &^ 1023
	img := make([]byte, size)
	for len(data) >= 4 {
		at := (int(data[0]) | int(data[1])<<8) * packUnit
		n := min(int(data[2])|int(data[3])<<8, packUnit, len(data)-4)
		if at < size {
			copy(img[at:min(at+n, size)], data[4:4+n])
		}
		data = data[4+n:]
	}
	return img
}

func readGz(path string) ([]byte, error) {
	raw, err := readFile(path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func FuzzPartitions(f *testing.F) {
	f.Add(seed(f, "mbr.img.gz"))
	f.Add(seed(f, "gpt.img.gz"))
	f.Add(seed(f, "ext4.img.gz"))
	f.Fuzz(func(t *testing.T, data []byte) {
		data = expandImage(data, 1<<20)[:1<<20]
		size := int64(len(data))
		parts, err := Partitions(bytes.NewReader(data), size)
		if err == nil && parts == nil {
			t.Fatal("no partitions and no error")
		}
		for _, p := range parts {
			if p.Start < 0 || p.Size <= 0 || p.Start+p.Size > size {
				t.Fatalf("partition %+v outside disk of %d bytes", p, size)
			}
		}
	})
}

func FuzzQcow2(f *testing.F) {
	f.Add(seed(f, "ext4.qcow2.gz"))
	f.Add(seed(f, "ext4c.qcow2.gz"))
	f.Add(seed(f, "ext4x.qcow2.gz"))
	withRetries(f, noRetries)
	f.Fuzz(func(t *testing.T, data []byte) {
		data = expandImage(data, 256<<10)[:256<<10]
		r := bytes.NewReader(data)
		hd, err := parseQcow2Header(r, int64(len(data)))
		if err != nil {
			return
		}
		q, err := newQcow2(r, int64(len(data)), hd, nil, 0)
		if err != nil {
			return
		}
		// Read the start of the disk and a few far offsets; then the filesystem on it.
		buf := make([]byte, 64<<10)
		for _, off := range []int64{0, 64 << 10, q.size / 2, q.size - 1} {
			n, err := q.ReadAt(buf, off)
			if n < 0 || n > len(buf) || (err == nil && n != len(buf)) {
				t.Fatalf("ReadAt(%d): n=%d err=%v", off, n, err)
			}
		}
		if fs, err := OpenFS(q, q.size); err == nil {
			noRetryWait(fs)
			walkBounded(t, fs)
		}
	})
}

func FuzzExt4(f *testing.F) {
	for _, s := range []string{"ext4.img.gz", "ext2.img.gz", "inline.img.gz", "journal.img.gz"} {
		f.Add(seed(f, s))
	}
	withRetries(f, noRetries)
	f.Fuzz(func(t *testing.T, data []byte) {
		data = expandImage(data, 128<<10)
		fs, err := OpenFS(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if fs != nil {
				t.Fatal("OpenFS returned an FS and an error")
			}
			return
		}
		noRetryWait(fs)
		walkBounded(t, fs)
		mappedMatchesReads(t, fs, data)
	})
}

// mappedMatchesReads opens the same image as a mapped raw file and checks, for the
// regular files of the first 2000 entries, that contents written from the mapping
// (WriteTo) are the bytes fs's preads return, up to 1 MiB each, and that both fail or
// neither: extents out of the image, overlapping or huge must never fault the process.
func mappedMatchesReads(t *testing.T, fs FS, data []byte) {
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	im, err := OpenImageFormat(path, "raw")
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	mfs, err := OpenFS(im, im.Size())
	if err != nil {
		t.Fatalf("the image opened from memory but not from its mapped file: %v", err)
	}
	noRetryWait(mfs)
	if mfs.(*ext4FS).mem == nil {
		t.Fatal("the image file was not mapped")
	}
	mfs.(*ext4FS).resident = nil // read all from the mapping, cached or not
	steps := 0
	fs.Walk(context.Background(), "/", func(p string, e *Entry, _ error) error {
		if steps++; steps > 2000 {
			return errStop
		}
		if e == nil || e.Type != Regular {
			return nil
		}
		r, err := fs.Open(p)
		mr, merr := mfs.Open(p)
		if (err == nil) != (merr == nil) {
			t.Fatalf("%s: open %v, mapped open %v", p, err, merr)
		}
		if err != nil {
			return nil
		}
		defer r.Close()
		defer mr.Close()
		want, rerr := io.ReadAll(io.LimitReader(struct{ io.Reader }{r}, 1<<20))
		w := &capWriter{max: 1 << 20}
		_, werr := mr.(io.WriterTo).WriteTo(w)
		if errors.Is(werr, errStop) {
			werr = nil
		}
		if !bytes.Equal(w.b[:min(len(w.b), len(want))], want[:min(len(w.b), len(want))]) {
			t.Fatalf("%s: mapped bytes differ from read bytes", p)
		}
		if (rerr == nil) != (werr == nil) {
			t.Fatalf("%s: read error %v, mapped error %v", p, rerr, werr)
		}
		return nil
	})
}

// capWriter keeps the first max bytes written and then stops the writer.
type capWriter struct {
	b   []byte
	max int
}

func (w *capWriter) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > w.max {
		w.b = append(w.b, p[:w.max-len(w.b)]...)
		return 0, errStop
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

// walkBounded walks at most 2000 entries, reads up to 1 MiB of each regular file and
// checks the Walk contract: exactly one of e and err is set, paths are absolute.
func walkBounded(t *testing.T, fs FS) {
	steps := 0
	err := fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
		if steps++; steps > 2000 {
			return errStop
		}
		if (e == nil) == (err == nil) {
			t.Fatalf("%s: entry %v and error %v", p, e, err)
		}
		if !strings.HasPrefix(p, "/") {
			t.Fatalf("relative path %q", p)
		}
		if e != nil && e.Type == Regular {
			if r, err := fs.Open(p); err == nil {
				io.Copy(io.Discard, io.LimitReader(r, 1<<20))
				r.Close()
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		t.Fatalf("walk: %v", err)
	}
}

var errStop = errors.New("step bound reached")

func TestPackImageRoundTrip(t *testing.T) {
	img, err := readGz("testdata/ext4.img.gz")
	must(t, err)
	p := packImage(img)
	if !bytes.Equal(expandImage(p, len(img)), img) {
		t.Fatal("expandImage(packImage(img)) != img")
	}
	if len(p) > 16<<10 {
		t.Errorf("packed seed is %d bytes; keep seeds under 16 KiB for the fuzzer", len(p))
	}
	fs, err := OpenFS(bytes.NewReader(img), int64(len(img)))
	must(t, err)
	e, err := fs.Lstat("/bin/prog")
	must(t, err)
	if e.Mode != 0o4755 || e.Xattrs["security.capability"] == nil {
		t.Errorf("seed /bin/prog: mode %#o xattrs %v", e.Mode, e.Xattrs)
	}

	// The journal seed must make the fuzzer start inside the replay code.
	j, err := readGz("testdata/journal.img.gz")
	must(t, err)
	j = expandImage(packImage(j), 128<<10)
	jfs, err := OpenFS(bytes.NewReader(j), int64(len(j)))
	must(t, err)
	if jfs.(*ext4FS).journalBlocks == 0 {
		t.Error("journal seed: nothing replayed")
	}
	r, err := jfs.Open("/etc/passwd")
	must(t, err)
	b, _ := io.ReadAll(r)
	if !strings.HasPrefix(string(b), "hacked") {
		t.Errorf("journal seed: /etc/passwd = %q, want the journaled block", b)
	}
}

// withRetries makes the filesystems opened until the end of tb use policy p (noRetries:
// a fuzz input does not change while it is read, and the retries of an unreadable root
// directory waited up to ~85 ms per input: go test -fuzz FuzzExt4 -fuzztime 2000x
// -parallel 1 took 58 s with them, 7 s without, on the shared 2-core machine).
func withRetries(tb testing.TB, p retryPolicy) {
	old := retries
	retries = p
	tb.Cleanup(func() { retries = old })
}

// noRetryWait turns off the waits before retries (the input does not change while it
// is read), so that each fuzz input runs at full speed.
func noRetryWait(fs FS) {
	if e, ok := fs.(*ext4FS); ok {
		e.retryWait.Store(maxRetryWait)
	}
}
