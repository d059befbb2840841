package diskscan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestQcow2Variants: version 2 headers, small and large clusters, and an L2 cache of two
// tables (constant eviction) all read the same filesystem.
func TestQcow2Variants(t *testing.T) {
	dir := images(t)
	src := sourceTree(t, filepath.Join(dir, "src"))
	raw := filepath.Join(dir, "ext4.raw")
	for _, c := range []struct {
		name, opts string
		l2Max      int
	}{
		{"v2", "compat=0.10", 0},
		{"512-byte clusters, 2 cached L2 tables", "cluster_size=512", 2},
		{"4k clusters", "cluster_size=4096", 0},
		{"2M clusters", "cluster_size=2M", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "x.qcow2")
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", c.opts, raw, img)
			im, err := OpenImage(img)
			must(t, err)
			defer im.Close()
			if c.l2Max > 0 {
				im.r.(*qcow2).l2Max = c.l2Max
			}
			fs, err := openVolume(im, im.Size(), -1)
			must(t, err)
			compareTree(t, fs, src, filepath.Join(dir, "src"))
			if q := im.r.(*qcow2); c.l2Max > 0 && q.l2lru.Len() > c.l2Max {
				t.Errorf("L2 cache holds %d tables, limit %d", q.l2lru.Len(), c.l2Max)
			}
		})
	}
}

// TestQcow2ZeroClusters: an overlay whose clusters over a file's data are zero clusters
// (qemu-io write -z on top of a backing file) reads zeros there, and the backing file's
// data elsewhere.
func TestQcow2ZeroClusters(t *testing.T) {
	dir := images(t)
	raw := filepath.Join(dir, "ext4.raw")
	fs0, c0, err := OpenVolume(raw, -1)
	must(t, err)
	defer c0.Close()
	// Physical location of /bin/big's first 64 KiB (cluster-aligned in the volume).
	e4 := fs0.(*ext4FS)
	in, err := e4.lookup(e4.newOp(false), "/bin/big", false)
	must(t, err)
	exts, err := e4.newOp(false).mapBlocks(in)
	must(t, err)
	phys := int64(exts[0].pblk) * e4.bs
	const cl = 64 << 10
	zeroAt := (phys + cl - 1) / cl * cl // first whole cluster inside the file
	if zeroAt+cl > phys+int64(exts[0].n)*e4.bs {
		t.Fatalf("/bin/big's first extent has no whole 64 KiB cluster")
	}
	tmp := t.TempDir()
	base, overlay := filepath.Join(tmp, "base.qcow2"), filepath.Join(tmp, "overlay.qcow2")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, base)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay)
	run(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -z %d %d", zeroAt, cl), overlay)

	im, err := OpenImage(overlay)
	must(t, err)
	defer im.Close()
	q := im.r.(*qcow2)
	if e, err := q.l2Entry(zeroAt); err != nil || e&qcowZero == 0 {
		t.Fatalf("L2 entry for %#x = %#x (%v): qemu-io did not make a zero cluster", zeroAt, e, err)
	}
	fs, err := openVolume(im, im.Size(), -1)
	must(t, err)
	want := readWhole(t, fs0, "/bin/big")
	off := zeroAt - phys // file offset of the zeroed cluster
	copy(want[off:off+cl], make([]byte, cl))
	if got := readWhole(t, fs, "/bin/big"); !bytes.Equal(got, want) {
		t.Errorf("/bin/big through the overlay: not the base contents with [%#x,+64K) zeroed", off)
	}
}

func readWhole(t *testing.T, fs FS, p string) []byte {
	r, err := fs.Open(p)
	must(t, err)
	defer r.Close()
	b, err := io.ReadAll(r)
	must(t, err)
	return b
}

// TestFormatNotProbedWhenKnown: a guest can write a qcow2 header into sector 0 of its raw
// disk. Opened as "raw", the image stays raw; a raw backing file recorded as raw in the
// overlay's header (qemu-img create -F raw) is not probed either.
func TestFormatNotProbedWhenKnown(t *testing.T) {
	dir := t.TempDir()
	planted := append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 1<<20-8)...)
	base := filepath.Join(dir, "base.raw")
	must(t, os.WriteFile(base, planted, 0o644))

	im, err := OpenImageFormat(base, "raw")
	must(t, err)
	b := make([]byte, 4)
	_, err = im.ReadAt(b, 0)
	must(t, err)
	if im.Format() != "raw" || im.Size() != 1<<20 || string(b) != "QFI\xfb" {
		t.Errorf("raw image with a planted header: format %s size %d first bytes %q", im.Format(), im.Size(), b)
	}
	im.Close()
	if _, err := OpenImage(base); err == nil {
		t.Error("probing the planted header as qcow2 should fail on its garbage header")
	}

	overlay := filepath.Join(dir, "overlay.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", overlay)
	im, err = OpenImage(overlay)
	must(t, err)
	defer im.Close()
	_, err = im.ReadAt(b, 0)
	must(t, err)
	if string(b) != "QFI\xfb" {
		t.Errorf("through the overlay: first bytes %q, want the raw backing file's", b)
	}
	if _, err := OpenImageFormat(overlay, "vmdk"); !errors.Is(err, ErrUnsupportedImage) {
		t.Errorf("format vmdk: %v", err)
	}
}
