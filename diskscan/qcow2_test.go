package diskscan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
	if e, _, err := q.l2Entry(zeroAt, false); err != nil || e&qcowZero == 0 {
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

// TestQcow2ExtendedL2: images with extended L2 entries (32 subclusters per cluster, each
// with an allocation and a zero bit) read as qemu-img convert -O raw reads them: data,
// zeroed (allocated or not) and unallocated subclusters (from the backing file, or zeros
// without one), compressed clusters, and whole zeroed clusters; with 64 KiB and 32 KiB
// clusters.
func TestQcow2ExtendedL2(t *testing.T) {
	ops := []string{
		"write -P 0x11 0 2k",        // one subcluster of a 64k cluster
		"write -P 0x22 6k 4k",       // two subclusters, not the next ones
		"write -z 16k 2k",           // a zeroed subcluster in an allocated cluster
		"write -z 64k 64k",          // a whole zeroed cluster
		"write -c -P 0x33 128k 64k", // a compressed cluster
		"write -P 0x44 200k 2k",
		"write -z -u 202k 2k",
		"write -P 0x55 1020k 8k", // across a cluster boundary
		"write -P 0x66 3m 1k",    // half a subcluster: the rest from the backing file
		"write -z 3m 512",
	}
	for _, c := range []struct {
		name    string
		backing bool
		cluster string
	}{
		{"raw backing file, 64k clusters", true, "64k"},
		{"no backing file, 64k clusters", false, "64k"},
		{"raw backing file, 32k clusters", true, "32k"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "x.qcow2")
			args := []string{"create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=" + c.cluster}
			if c.backing {
				base := filepath.Join(dir, "base.raw")
				run(t, "qemu-img", "create", "-q", "-f", "raw", base, "4M")
				run(t, "qemu-io", "-f", "raw", "-c", "write -P 0xbb 0 4M", base)
				args = append(args, "-b", "base.raw", "-F", "raw")
			}
			run(t, "qemu-img", append(args, img, "4M")...)
			qio := []string{"-f", "qcow2"}
			for _, op := range ops {
				qio = append(qio, "-c", op)
			}
			run(t, "qemu-io", append(qio, img)...)
			want := filepath.Join(dir, "want.raw")
			run(t, "qemu-img", "convert", "-O", "raw", img, want)

			im, err := OpenImageFormat(img, "qcow2")
			must(t, err)
			defer im.Close()
			if !im.r.(*qcow2).extL2 {
				t.Fatal("image not read as having extended L2 entries")
			}
			got := make([]byte, im.Size())
			_, err = im.ReadAt(got, 0)
			must(t, err)
			w := readAll(t, want)
			if !bytes.Equal(got, w) {
				for i := range got {
					if got[i] != w[i] {
						t.Fatalf("first difference at guest offset %#x: %#x, qemu-img %#x", i, got[i], w[i])
					}
				}
			}
			// Unaligned reads across subcluster and cluster boundaries.
			for _, r := range [][2]int64{{1000, 3000}, {60 << 10, 10 << 10}, {(3 << 20) - 100, 3000}} {
				b := make([]byte, r[1])
				_, err := im.ReadAt(b, r[0])
				must(t, err)
				if !bytes.Equal(b, w[r[0]:r[0]+r[1]]) {
					t.Errorf("read of %d bytes at %#x differs from qemu-img's", r[1], r[0])
				}
			}
		})
	}
}

// TestQcow2HeaderAsStrictAsQEMU edits the header of a valid image (as qemu-iotests 080
// does) and checks that this package opens it exactly when QEMU (qemu-io -r, read-only
// as Domain M) does: an image QEMU refuses, such as a compression-type bit with no
// compression-type field, cannot be what the target runs from.
func TestQcow2HeaderAsStrictAsQEMU(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "8M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", base)
	small := filepath.Join(dir, "small.qcow2") // 8 KiB clusters
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=8k", small, "8M")
	withExt := filepath.Join(dir, "ext.qcow2") // a backing file and its format extension
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", withExt)
	snap := filepath.Join(dir, "snap.qcow2") // an internal snapshot
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", snap, "8M")
	run(t, "qemu-img", "snapshot", "-c", "s1", snap)
	snapExtra := func(v uint32) func([]byte) { // the first snapshot's extra data size
		return func(b []byte) { binary.BigEndian.PutUint32(b[binary.BigEndian.Uint64(b[64:])+36:], v) }
	}

	u32 := func(off int, v uint32) func([]byte) {
		return func(b []byte) { binary.BigEndian.PutUint32(b[off:], v) }
	}
	u64 := func(off int, v uint64) func([]byte) {
		return func(b []byte) { binary.BigEndian.PutUint64(b[off:], v) }
	}
	or64 := func(off int, v uint64) func([]byte) {
		return func(b []byte) { binary.BigEndian.PutUint64(b[off:], binary.BigEndian.Uint64(b[off:])|v) }
	}
	for _, c := range []struct {
		name  string
		image string
		edit  []func([]byte)
		open  bool // what QEMU does (checked too)
	}{
		{"unmodified", base, nil, true},
		{"dirty bit", base, []func([]byte){or64(72, 1)}, true},
		{"compression bit, zlib type", base, []func([]byte){or64(72, 1<<3)}, false},
		{"compression bit, no compression field", base, []func([]byte){or64(72, 1<<3), u32(100, 104)}, false},
		{"zstd type without its bit", base, []func([]byte){func(b []byte) { b[104] = 1 }}, false},
		{"unknown compression type", base, []func([]byte){or64(72, 1<<3), func(b []byte) { b[104] = 7 }}, false},
		{"unknown incompatible bit", base, []func([]byte){or64(72, 1<<5)}, false},
		{"header length 100", base, []func([]byte){u32(100, 100)}, false},
		{"header length beyond the cluster", base, []func([]byte){u32(100, 1<<17)}, false},
		{"backing file offset beyond the cluster", base, []func([]byte){u64(8, 1<<17), u32(16, 4)}, false},
		{"refcount order 7", base, []func([]byte){u32(96, 7)}, false},
		{"no refcount table", base, []func([]byte){u32(56, 0)}, false},
		{"unaligned refcount table", base, []func([]byte){u64(48, 0x10200)}, false},
		{"refcount table too large", base, []func([]byte){u32(56, 1<<20)}, false},
		{"unaligned snapshot table", base, []func([]byte){u64(64, 0x10200)}, false},
		{"too many snapshots", base, []func([]byte){u32(60, 1<<20)}, false},
		{"unaligned L1 table", base, []func([]byte){u64(40, 0x30008)}, false},
		{"extended L2 with 8k clusters", small, []func([]byte){or64(72, 1<<4)}, false},
		{"backing format name of 16 bytes", withExt, []func([]byte){u32(112+4, 16)}, false},
		{"data-file-raw without a data file", base, []func([]byte){or64(88, 2)}, false},
		{"a snapshot", snap, nil, true},
		{"snapshot with 2000 bytes of extra data", snap, []func([]byte){snapExtra(2000)}, false},
		{"header extension beyond the first cluster", withExt, []func([]byte){u32(112+4, 1<<16)}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "x.qcow2")
			b := readAll(t, c.image)
			for _, e := range c.edit {
				e(b)
			}
			must(t, os.WriteFile(img, b, 0o644))
			if c.image == withExt {
				must(t, os.Symlink(base, filepath.Join(filepath.Dir(img), "base.qcow2")))
			}
			out, err := execCommand("qemu-io", "-r", "-f", "qcow2", "-c", "read 0 512", img).CombinedOutput()
			if qemuOpens := err == nil && !bytes.Contains(out, []byte("Could not open")); qemuOpens != c.open {
				t.Fatalf("qemu-io opens it: %v, the test expects %v:\n%s", qemuOpens, c.open, out)
			}
			im, err := OpenImageFormat(img, "qcow2")
			if err == nil {
				im.Close()
			}
			if (err == nil) != c.open {
				t.Errorf("OpenImageFormat: %v; QEMU opens it: %v", err, c.open)
			}
			if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedImage) {
				t.Errorf("error %v matches neither ErrCorrupt nor ErrUnsupportedImage", err)
			}
		})
	}
}

// TestUnreadableRootRefused: a volume whose root directory cannot be read (inode cleared,
// directory block zeroed), raw or through qcow2, does not open: there is nothing to scan,
// and callers must see an error rather than an empty filesystem.
func TestUnreadableRootRefused(t *testing.T) {
	dir := images(t)
	good := filepath.Join(dir, "ext4.raw")
	for _, c := range []struct{ name, debugfs string }{
		{"root inode cleared", "clri <2>"},
		{"root directory block zeroed", "zap_block -f <2> 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmp := t.TempDir()
			img := filepath.Join(tmp, "broken.raw")
			copyFile(t, good, img)
			run(t, "debugfs", "-w", "-R", c.debugfs, img)
			qc := filepath.Join(tmp, "broken.qcow2")
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", img, qc)
			for _, f := range []struct{ path, format string }{{img, "raw"}, {qc, "qcow2"}} {
				fs, c, err := OpenVolumeFormat(f.path, f.format, -1)
				if err == nil {
					c.Close()
					t.Errorf("%s: opened (%T), want an error", f.format, fs)
					continue
				}
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "root directory") {
					t.Errorf("%s: %v, want ErrCorrupt naming the root directory", f.format, err)
				}
			}
		})
	}
}
