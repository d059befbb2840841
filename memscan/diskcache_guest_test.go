//go:build linux

package memscan_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/linux"
)

// TestDiskCacheGuestRAM measures what the small-read cache saves on a real Linux
// guest's RAM (a file kept by memscan/linux's TestGuestAttribution with
// DOMAINM_KEEP_GUEST_RAM, named by DOMAINM_GUEST_RAM) seen as a read-only loop device
// with direct I/O, as Domain M sees the target's RAM file in libvirt: deriving the
// layout, listing processes, attributing and scanning the seams, each once without the
// cache and once with it (and once through file:, mapped, for reference). Both must find the same guest; with the cache, fewer device
// requests.
func TestDiskCacheGuestRAM(t *testing.T) {
	ram := os.Getenv("DOMAINM_GUEST_RAM")
	if ram == "" {
		t.Skip("DOMAINM_GUEST_RAM names no Linux guest RAM file (keep one with DOMAINM_KEEP_GUEST_RAM in memscan/linux's TestGuestAttribution)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup")
	}
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", "--direct-io=on", ram).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v: %s", ram, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	rs := compile(t, testRules)
	type run struct {
		release           string
		tasks             int
		requests          uint64
		layout, guestWork time.Duration
	}
	// spec "" is the loop device through disk:, else a reference (file: of the RAM file).
	measure := func(cache bool, spec string) run {
		disk := spec == ""
		if disk {
			spec = "disk:" + dev
		}
		src, err := memscan.Open(spec, memscan.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if disk {
			memscan.SetDiskCache(src, cache)
		}
		t0 := time.Now()
		g, err := linux.OpenGuest(src)
		if err != nil {
			t.Fatalf("cache %v: layout: %v", cache, err)
		}
		layout := time.Since(t0)
		snap, err := g.Snapshot()
		if err != nil {
			t.Fatalf("cache %v: snapshot: %v", cache, err)
		}
		if _, _, err := snap.Attribute([]uint64{0x1000000, 0x2345678}); err != nil {
			t.Fatalf("cache %v: attribute: %v", cache, err)
		}
		if _, _, err := snap.ScanVirtual(context.Background(), src, memscan.NewSeamScanner(0, 2, 0), rs, nil); err != nil {
			t.Fatalf("cache %v: seams: %v", cache, err)
		}
		r := run{release: g.In.K.Release, tasks: len(snap.Tasks), layout: layout, guestWork: time.Since(t0)}
		if !disk {
			t.Logf("reference %s: %s, %d tasks: layout %v, layout+snapshot+attribute+seams %v",
				spec, r.release, r.tasks, layout.Round(time.Millisecond), r.guestWork.Round(time.Millisecond))
			return r
		}
		req, hits, misses := memscan.DiskRequests(src)
		r.requests = req
		t.Logf("disk: cache %-5v: %s, %d tasks: %d O_DIRECT requests (cache hits %d, misses %d); layout %v, layout+snapshot+attribute+seams %v",
			cache, r.release, r.tasks, req, hits, misses, layout.Round(time.Millisecond), r.guestWork.Round(time.Millisecond))
		return r
	}
	measure(false, "file:"+ram)
	on := measure(true, "")
	off := measure(false, "")
	if on.release != off.release || on.tasks != off.tasks {
		t.Errorf("with the cache %q with %d tasks, without %q with %d", on.release, on.tasks, off.release, off.tasks)
	}
	if on.requests*4 > off.requests {
		t.Errorf("%d device requests with the cache, %d without: want at most a quarter", on.requests, off.requests)
	}
}
