//go:build linux

package memscan_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/domainm/domainm/memscan"
)

// loopDevice attaches file read-only to a free loop device, detached at cleanup.
func loopDevice(t *testing.T, file string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", file).CombinedOutput()
	if err != nil {
		t.Skipf("losetup %s: %v: %s", file, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// TestDiskSeesTargetWrites is the libvirt view in small: the target's RAM file as a
// read-only block device, rewritten by the "target" through its own fd while the source
// is open. The source must see the new bytes; a buffered read of the same device is
// the control that shows why O_DIRECT is needed.
func TestDiskSeesTargetWrites(t *testing.T) {
	const size = 16 << 20
	const at = 0x5a5a13 // not block-aligned
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>12) // no zero pages, no accidental marks
	}
	copy(data[at:], "DOMAINM-MARK-1234")
	ram := filepath.Join(t.TempDir(), "pc.ram")
	if err := os.WriteFile(ram, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dev := loopDevice(t, ram)

	src, err := memscan.Open("disk:"+dev, memscan.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if rs := src.Ranges(); len(rs) != 1 || rs[0] != (memscan.Range{GPA: 0, Size: size}) {
		t.Fatalf("ranges %v, want [0, 16 MiB) from BLKGETSIZE64", rs)
	}
	read := func(gpa int64, n int) []byte {
		t.Helper()
		p := make([]byte, n)
		if got, err := src.ReadAt(p, gpa); err != nil || got != n {
			t.Fatalf("ReadAt(%d, %#x) = %d, %v", n, gpa, got, err)
		}
		return p
	}
	if got := read(at, 17); string(got) != "DOMAINM-MARK-1234" {
		t.Fatalf("planted string: read %q", got)
	}
	// Longer than a chunk, unaligned at both ends.
	if got := read(4097, 3<<20+5); !bytes.Equal(got, data[4097:4097+3<<20+5]) {
		t.Fatal("3 MiB read at 4097: wrong bytes")
	}

	// Small reads (the guest-layout walks' kind) go through the small-read cache:
	// random lengths and addresses, across cache blocks, up to the device's end.
	rnd := rand.New(rand.NewPCG(1, 2))
	req0, _, _ := memscan.DiskRequests(src)
	for range 3000 {
		n := 1 + rnd.IntN(9000)
		gpa := rnd.Int64N(size - int64(n) + 1)
		if rnd.IntN(4) == 0 { // near a 64 KiB boundary
			gpa = max(0, min(size-int64(n), (gpa&^0xffff)-int64(rnd.IntN(n))))
		}
		if got := read(gpa, n); !bytes.Equal(got, data[gpa:gpa+int64(n)]) {
			t.Fatalf("ReadAt(%d, %#x): wrong bytes", n, gpa)
		}
	}
	req1, hits, misses := memscan.DiskRequests(src)
	t.Logf("3000 small reads over 16 MiB: %d device requests, cache %d hits, %d misses", req1-req0, hits, misses)
	// Within 4 MiB (the cache holds 8): a request per 64 KiB block at most.
	src.Ranges()
	req0, _, _ = memscan.DiskRequests(src)
	for range 3000 {
		n := 1 + rnd.IntN(4096)
		gpa := 4<<20 + rnd.Int64N(4<<20-int64(n))
		if got := read(gpa, n); !bytes.Equal(got, data[gpa:gpa+int64(n)]) {
			t.Fatalf("ReadAt(%d, %#x): wrong bytes", n, gpa)
		}
	}
	if req1, _, _ = memscan.DiskRequests(src); req1-req0 > 64 {
		t.Errorf("3000 small reads within 4 MiB took %d device requests, want at most 64 (one per 64 KiB block)", req1-req0)
	}
	// Concurrent small reads while walks begin (Ranges empties the cache) and end:
	// always the right bytes (run with -race).
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			p := make([]byte, 9000)
			for i := range 1500 {
				if w == 0 && i%100 == 0 {
					src.Ranges()
				}
				n := 1 + r.IntN(len(p))
				gpa := 6<<20 + r.Int64N(6<<20)
				if got, err := src.ReadAt(p[:n], gpa); err != nil || got != n || !bytes.Equal(p[:n], data[gpa:gpa+int64(n)]) {
					t.Errorf("concurrent ReadAt(%d, %#x) = %d, %v (bytes equal: %v)", n, gpa, got, err, bytes.Equal(p[:n], data[gpa:gpa+int64(n)]))
					return
				}
			}
		}()
	}
	wg.Wait()
	// Many reads in one block: one request.
	src.Ranges()
	req0, _, _ = memscan.DiskRequests(src)
	for i := range 512 {
		read(0x230000+int64(i)*8, 8)
	}
	if req1, _, _ = memscan.DiskRequests(src); req1-req0 != 1 {
		t.Errorf("512 8-byte reads in one 64 KiB block: %d device requests, want 1", req1-req0)
	}

	// Control: a buffered read fills Domain M's page cache for the device.
	cached, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer cached.Close()
	before := make([]byte, 17)
	if _, err := cached.ReadAt(before, at); err != nil || string(before) != "DOMAINM-MARK-1234" {
		t.Fatalf("buffered read: %q, %v", before, err)
	}

	// The target rewrites its RAM.
	w, err := os.OpenFile(ram, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("DOMAINM-MARK-5678"), at); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	copy(data[at:], "DOMAINM-MARK-5678")

	// A new walk (a pass begins by asking for the ranges) sees the new bytes, though
	// the small read before the write left its block in the cache.
	src.Ranges()
	if got := read(at, 17); string(got) != "DOMAINM-MARK-5678" {
		t.Errorf("after the target's write: read %q through disk:, want the new bytes", got)
	}
	// So does a read after Invalidate.
	writeAt := func(s string, off int64) {
		t.Helper()
		w, err := os.OpenFile(ram, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.WriteAt([]byte(s), off); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	writeAt("DOMAINM-MARK-9999", at)
	src.(*memscan.DiskSource).Invalidate()
	if got := read(at, 17); string(got) != "DOMAINM-MARK-9999" {
		t.Errorf("after Invalidate: read %q, want the new bytes", got)
	}
	writeAt("DOMAINM-MARK-5678", at)
	after := make([]byte, 17)
	if _, err := cached.ReadAt(after, at); err != nil {
		t.Fatal(err)
	}
	if string(after) == "DOMAINM-MARK-1234" {
		t.Logf("control: buffered read of %s still shows %q (stale page cache)", dev, after)
	} else {
		t.Logf("control: buffered read of %s shows %q (staleness did not reproduce)", dev, after)
	}

	// The scan driver finds the new string at its address.
	rs := compile(t, testRules)
	res, err := memscan.NewDriver(memscan.DriverConfig{}).Pass(context.Background(), src,
		memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }})
	if err != nil || len(res.Errors) > 0 {
		t.Fatalf("pass: %v, block errors %v", err, res.Errors)
	}
	if got := addrs(res, "marker"); !slices.Equal(got, []uint64{at}) {
		t.Errorf("marker at %#x, want [%#x]", got, at)
	}

	// Pass to pass, as the supervisor reads: a small read after a pass (attribution)
	// fills the cache; the target writes; the next pass and the small reads after it
	// see the new bytes.
	if got := read(at, 17); string(got) != "DOMAINM-MARK-5678" {
		t.Fatalf("small read after the pass: %q", got)
	}
	writeAt("DOMAINM-MARK-4321", at)
	copy(data[at:], "DOMAINM-MARK-4321")
	if _, err := memscan.NewDriver(memscan.DriverConfig{}).Pass(context.Background(), src,
		memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}); err != nil {
		t.Fatal(err)
	}
	if got := read(at, 17); string(got) != "DOMAINM-MARK-4321" {
		t.Errorf("small read after the next pass: %q, want the target's new bytes", got)
	}

	// Past the end: the bytes up to it and ErrOutOfRange.
	p := make([]byte, 100)
	if n, err := src.ReadAt(p, size-40); n != 40 || !errors.Is(err, memscan.ErrOutOfRange) || !bytes.Equal(p[:40], data[size-40:]) {
		t.Errorf("read across the end: %d, %v", n, err)
	}
}

// TestDiskLayout lays the device out like any RAM file.
func TestDiskLayout(t *testing.T) {
	data := make([]byte, 3<<20)
	copy(data[1<<20+12345:], "HIGH")
	ram := filepath.Join(t.TempDir(), "pc.ram")
	if err := os.WriteFile(ram, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dev := loopDevice(t, ram)
	l, err := memscan.ParseLayout("split:1M")
	if err != nil {
		t.Fatal(err)
	}
	src, err := memscan.Open("disk:"+dev, memscan.OpenOptions{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if rs := src.Ranges(); len(rs) != 2 || rs[1] != (memscan.Range{GPA: 4 << 30, Size: 2 << 20}) {
		t.Fatalf("ranges %v", rs)
	}
	p := make([]byte, 4)
	if _, err := src.ReadAt(p, 4<<30+12345); err != nil || string(p) != "HIGH" {
		t.Errorf("read above the hole: %q, %v", p, err)
	}
	if _, err := src.ReadAt(p, 2<<20); !errors.Is(err, memscan.ErrOutOfRange) {
		t.Errorf("read in the hole: %v", err)
	}
}

func TestDiskMissing(t *testing.T) {
	const path = "/dev/disk/by-id/virtio-domainm-view-not-attached"
	_, err := memscan.Open("disk:"+path, memscan.OpenOptions{})
	var miss *memscan.DiskMissingError
	if !errors.As(err, &miss) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want a DiskMissingError naming %s that matches fs.ErrNotExist", err, path)
	}
}
