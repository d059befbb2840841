//go:build linux

package mmap

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

func TestMapSeesWritesAndFaultsSafely(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram")
	page := os.Getpagesize()
	if err := os.WriteFile(path, make([]byte, 3*page), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Map(f, int64(3*page))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	// MAP_SHARED: a later write through another descriptor is visible.
	want := []byte("live guest write")
	if _, err := f.WriteAt(want, int64(2*page+10)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := Copy(got, m.Bytes()[2*page+10:]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("mapped bytes = %q, want %q", got, want)
	}

	// Shrinking the file under the mapping turns reads past the end into SIGBUS;
	// Copy must report it instead of crashing.
	if err := f.Truncate(int64(page)); err != nil {
		t.Fatal(err)
	}
	_, err = Copy(got, m.Bytes()[2*page:])
	var fe *FaultError
	if !errors.As(err, &fe) {
		t.Fatalf("Copy after truncate: err = %v, want *FaultError", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if m.Bytes() != nil {
		t.Fatal("Bytes after Close is not nil")
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestMapRejectsEmpty(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "empty"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Map(f, 0); err == nil {
		t.Fatal("Map of an empty file succeeded")
	}
}

// The hashes diskscan runs over a mapped disk image are assembly (SHA-NI): a fault in
// them must be caught as well as one in Go code.
func TestDoCatchesFaultInHashAssembly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	page := os.Getpagesize()
	if err := os.WriteFile(path, bytes.Repeat([]byte{7}, 64*page), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Map(f, int64(64*page))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var sum [32]byte
	if err := Do(func() { sum = sha256.Sum256(m.Bytes()) }); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(bytes.Repeat([]byte{7}, 64*page)); sum != want {
		t.Fatalf("hash of the mapping %x, want %x", sum, want)
	}
	if err := f.Truncate(int64(page)); err != nil {
		t.Fatal(err)
	}
	err = Do(func() { sum = sha256.Sum256(m.Bytes()) })
	var fe *FaultError
	if !errors.As(err, &fe) {
		t.Fatalf("hashing a truncated mapping: err = %v, want *FaultError", err)
	}
	if fe.Addr < uintptr(unsafe.Pointer(&m.Bytes()[page])) || fe.Addr >= uintptr(unsafe.Pointer(&m.Bytes()[0]))+uintptr(64*page) {
		t.Fatalf("fault address %#x outside the truncated part of the mapping", fe.Addr)
	}
}

// Release drops the pages from the process's resident set; the bytes stay readable and
// show the file's current content.
func TestReleaseDropsResidentPages(t *testing.T) {
	const size = 32 << 20
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Map(f, size)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	before := rssFile(t)
	var sum [32]byte
	if err := Do(func() { sum = sha256.Sum256(m.Bytes()) }); err != nil {
		t.Fatal(err)
	}
	touched := rssFile(t)
	if touched-before < size/2 {
		t.Fatalf("RssFile grew by %d bytes reading %d mapped bytes; the test cannot see Release work", touched-before, size)
	}
	if err := m.Release(0, size); err != nil {
		t.Fatal(err)
	}
	if released := rssFile(t); touched-released < size/2 {
		t.Fatalf("RssFile %d -> %d after Release of %d bytes", touched, released, size)
	}
	if _, err := f.WriteAt([]byte{9}, size-1); err != nil {
		t.Fatal(err)
	}
	if err := Do(func() { sum = sha256.Sum256(m.Bytes()) }); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{1}, size)
	want[size-1] = 9
	if sum != sha256.Sum256(want) {
		t.Fatal("after Release the mapping does not show the file's bytes")
	}
	// Out of range and empty: no error, nothing done.
	for _, r := range [][2]int64{{-1, 10}, {size, 10}, {0, 0}} {
		if err := m.Release(r[0], r[1]); err != nil {
			t.Fatalf("Release(%d, %d): %v", r[0], r[1], err)
		}
	}
}

// rssFile is the process's resident file-backed memory in bytes (/proc/self/status).
func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// Resident sees which pages of the file are in the page cache: the holes of a sparse
// file that nobody read are not, the pages written or read are, and a range is
// resident only when every page of it is (ranges longer than one mincore vector too).
func TestResident(t *testing.T) {
	page := int64(os.Getpagesize())
	size := 512 * page
	path := filepath.Join(t.TempDir(), "img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil { // all holes: nothing cached
		t.Fatal(err)
	}
	// Pages [0, 200) written: cached.
	if _, err := f.WriteAt(bytes.Repeat([]byte{3}, int(200*page)), 0); err != nil {
		t.Fatal(err)
	}
	m, err := Map(f, size)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		off, n int64
		want   bool
	}{
		{0, 200 * page, true},           // written, more than one vector of 64 pages
		{10, 5, true},                   // inside one page, unaligned
		{150 * page, 60 * page, false},  // runs into the holes
		{199*page + 1, page, false},     // unaligned, the second page a hole
		{300 * page, 10 * page, false},  // holes
		{500 * page, 100 * page, false}, // holes, clipped at the end
		{size, page, false},             // out of range
		{-1, page, false},               // out of range
		{0, 0, false},                   // empty
	} {
		got, err := m.Resident(c.off, c.n)
		if err != nil {
			t.Fatalf("Resident(%d, %d): %v", c.off, c.n, err)
		}
		if got != c.want {
			t.Errorf("Resident(%#x, %#x) = %v, want %v", c.off, c.n, got, c.want)
		}
	}
	// Reading the holes through the mapping brings them in.
	if err := Do(func() { _ = sha256.Sum256(m.Bytes()[300*page : 310*page]) }); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Resident(300*page, 10*page); err != nil || !got {
		t.Fatalf("Resident after reading: %v, %v", got, err)
	}
}
