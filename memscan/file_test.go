package memscan

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// writeSparse creates a sparse file of size bytes with data at the given offsets.
func writeSparse(t *testing.T, size int64, at map[int64]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ram")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, s := range at {
		if _, err := f.WriteAt([]byte(s), off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func readString(t *testing.T, src Source, gpa uint64, n int) string {
	t.Helper()
	p := make([]byte, n)
	if _, err := src.ReadAt(p, int64(gpa)); err != nil {
		t.Fatalf("ReadAt(%#x): %v", gpa, err)
	}
	return string(p)
}

func TestFileFlatAndSplit(t *testing.T) {
	const size = 3 * gib // sparse: only the written pages take space
	path := writeSparse(t, size, map[int64]string{
		0x1000:    "LOW-MARK",
		2*gib - 8: "EDGE", // last bytes below the q35 split
		2 * gib:   "HIGH-MARK",
		size - 9:  "END-MARK!",
	})
	flat, err := Open("file:"+path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer flat.Close()
	if got := flat.Ranges(); len(got) != 1 || got[0] != (Range{0, size}) {
		t.Fatalf("flat ranges = %v", got)
	}
	if got := readString(t, flat, 2*gib, 9); got != "HIGH-MARK" {
		t.Fatalf("flat %#x = %q", 2*gib, got)
	}

	q35, err := ParseLayout("q35")
	if err != nil {
		t.Fatal(err)
	}
	src, err := Open("file:"+path, OpenOptions{Layout: q35})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	want := []Range{{0, 2 * gib}, {4 * gib, gib}}
	if got := src.Ranges(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("q35 ranges = %v, want %v", got, want)
	}
	for gpa, s := range map[uint64]string{0x1000: "LOW-MARK", 2*gib - 8: "EDGE", 4 * gib: "HIGH-MARK", 5*gib - 9: "END-MARK!"} {
		if got := readString(t, src, gpa, len(s)); got != s {
			t.Errorf("q35 %#x = %q, want %q", gpa, got, s)
		}
	}
	// The PCI hole and reads crossing a range end are out of range.
	p := make([]byte, 16)
	if _, err := src.ReadAt(p, 3*gib); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("read in the PCI hole: %v, want ErrOutOfRange", err)
	}
	n, err := src.ReadAt(p, 2*gib-8)
	if n != 8 || !errors.Is(err, ErrOutOfRange) || string(p[:4]) != "EDGE" {
		t.Errorf("read across the split: n=%d err=%v %q", n, err, p[:n])
	}
	if _, err := src.ReadAt(p, -1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("negative address: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.ReadAt(p, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close: %v, want ErrClosed", err)
	}
}

// TestFileTruncatedUnderMapping: a RAM file that shrinks while mapped gives an error,
// not a SIGBUS crash.
func TestFileTruncatedUnderMapping(t *testing.T) {
	path := writeSparse(t, 1*mib, map[int64]string{mib - 4: "TAIL"})
	src, err := OpenFile(path, Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4)
	if _, err := src.ReadAt(p, mib-4); err == nil {
		t.Fatal("read past the truncated end succeeded")
	}
	if _, err := src.ReadAt(p, 0); err != nil {
		t.Fatalf("read below the truncated end: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	split, _ := ParseLayout("split:1G")
	for _, tc := range []struct {
		spec string
		opts OpenOptions
	}{
		{"", OpenOptions{}},
		{"nonsense", OpenOptions{}},
		{"disk:/x", OpenOptions{}},
		{"file:", OpenOptions{}},
		{"file:" + filepath.Join(dir, "missing"), OpenOptions{}},
		{"file:" + dir, OpenOptions{}},
		{"file:" + writeSparse(t, 0, nil), OpenOptions{}},
		{"elf:/x", OpenOptions{Layout: split}},
		{"xen:abc", OpenOptions{}},
		{"xen:70000", OpenOptions{}},
	} {
		if src, err := Open(tc.spec, tc.opts); err == nil {
			src.Close()
			t.Errorf("Open(%q) succeeded", tc.spec)
		}
	}
}

// BenchmarkFileSource measures copying guest memory out of a mapped tmpfs RAM file
// with ReadAt (a fault-safe copy), 1 MiB at a time.
func BenchmarkFileSource(b *testing.B) {
	const size = 64 << 20
	dir, err := os.MkdirTemp("/dev/shm", "bench-")
	if err != nil {
		dir = b.TempDir()
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ram")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0x5a}, size), 0o600); err != nil {
		b.Fatal(err)
	}
	src, err := OpenFile(path, Layout{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	buf := make([]byte, 1<<20)
	b.Run("ReadAt", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for i := 0; b.Loop(); i++ {
			if _, err := src.ReadAt(buf, int64(i%(size/len(buf))*len(buf))); err != nil {
				b.Fatal(err)
			}
		}
	})
}
