package memscan

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeND lays out /sys/bus/nd/devices as a QEMU 7.2 q35 guest (Debian 6.1 kernel)
// showed it with two nvdimms, slot 3 (handle 0x4) probed first as region0/pmem0 and
// slot 0 (handle 0x1) as region1/pmem1, and points the resolver at it; files adds,
// replaces or (with "") removes paths.
func fakeND(t *testing.T, files map[string]string) (sys, dev string) {
	t.Helper()
	root := t.TempDir()
	sys, dev = filepath.Join(root, "sys"), filepath.Join(root, "dev")
	nd := "bus/nd/devices/"
	all := map[string]string{
		nd + "nmem0/nfit/handle": "0x1\n", nd + "nmem0/nfit/serial": "0x56341200\n",
		nd + "nmem1/nfit/handle": "0x4\n", nd + "nmem1/nfit/serial": "0x59341200\n",
		nd + "ndbus0/provider":  "ACPI.NFIT\n",
		nd + "region0/mappings": "1\n", nd + "region0/mapping0": "nmem1,0,16777216,0\n",
		nd + "region0/namespace0.0/block/pmem0/size": "32768\n",
		nd + "region0/btt0.0/namespace":              "\n", nd + "region0/pfn0.0/namespace": "\n", nd + "region0/dax0.0/namespace": "\n",
		nd + "region1/mappings": "1\n", nd + "region1/mapping0": "nmem0,0,16777216,0\n",
		nd + "region1/namespace1.0/block/pmem1/size": "32768\n",
	}
	for k, v := range files {
		if v == "" {
			delete(all, k)
			continue
		}
		all[k] = v
	}
	for k, v := range all {
		p := filepath.Join(sys, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	useND(t, sys, dev)
	return sys, dev
}

func useND(t *testing.T, sys, dev string) {
	oldS, oldD := NVDIMMSysfs, NVDIMMDev
	NVDIMMSysfs, NVDIMMDev = sys, dev
	t.Cleanup(func() { NVDIMMSysfs, NVDIMMDev = oldS, oldD })
}

func TestFindNVDIMMByHandleNotOrder(t *testing.T) {
	fakeND(t, nil)
	for h, want := range map[uint32]string{0x4: "pmem0", 0x1: "pmem1"} {
		got, err := FindNVDIMM(h)
		if err != nil {
			t.Fatalf("handle %#x: %v", h, err)
		}
		if filepath.Base(got) != want || filepath.Dir(got) != NVDIMMDev {
			t.Errorf("handle %#x: %s, want %s/%s", h, got, NVDIMMDev, want)
		}
	}
}

func TestFindNVDIMMMissing(t *testing.T) {
	fakeND(t, nil)
	_, err := FindNVDIMM(0x2)
	var miss *NVDIMMMissingError
	if !errors.As(err, &miss) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want an NVDIMMMissingError matching fs.ErrNotExist", err)
	}
	for _, w := range []string{"handle 0x2", "slot=1", "nmem0=0x1", "nmem1=0x4"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q lacks %q", err, w)
		}
	}
	// No nvdimm at all: no nd bus in sysfs.
	useND(t, t.TempDir(), t.TempDir())
	if _, err := FindNVDIMM(0x1); !errors.As(err, &miss) || !strings.Contains(err.Error(), "present: none") {
		t.Errorf("no nd bus: %v", err)
	}
}

func TestFindNVDIMMRefusesClaimsAndInterleave(t *testing.T) {
	nd := "bus/nd/devices/"
	for name, c := range map[string]struct {
		files map[string]string
		want  string
	}{
		"pfn claim": {map[string]string{nd + "region0/pfn0.1/namespace": "namespace0.0\n",
			nd + "region0/namespace0.0/block/pmem0/size": "", nd + "region0/pfn0.1/block/pmem0/size": "1\n"}, "pfn0.1 claims namespace0.0"},
		"btt claim":  {map[string]string{nd + "region0/btt0.1/namespace": "namespace0.0\n"}, "btt0.1 claims"},
		"interleave": {map[string]string{nd + "region0/mappings": "2\n", nd + "region0/mapping1": "nmem0,0,1,1\n"}, "interleaves 2 dimms"},
		"no block":   {map[string]string{nd + "region0/namespace0.0/block/pmem0/size": ""}, "no raw pmem block device"},
	} {
		fakeND(t, c.files)
		if _, err := FindNVDIMM(0x4); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

func TestParseNVDIMM(t *testing.T) {
	for in, want := range map[string]uint32{"handle=0x4": 4, "handle=17": 17} {
		if h, err := ParseNVDIMM(in); err != nil || h != want {
			t.Errorf("%q: %d, %v", in, h, err)
		}
	}
	for _, in := range []string{"", "handle=", "handle=0", "slot=3", "handle=x", "handle=0x100000000", "uuid=1"} {
		if _, err := ParseNVDIMM(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// TestOpenNVDIMMReadsCurrentBytes opens the nvdimm through Open with a q35-style split
// layout and reads across unaligned offsets; bytes written after the open are read too
// (no cached copy).
func TestOpenNVDIMMReadsCurrentBytes(t *testing.T) {
	_, dev := fakeND(t, nil)
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	path := filepath.Join(dev, "pmem0")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := ParseLayout("split:1M")
	if err != nil {
		t.Fatal(err)
	}
	src, err := Open("nvdimm:handle=0x4", OpenOptions{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rs := src.Ranges()
	if len(rs) != 2 || rs[0] != (Range{0, 1 << 20}) || rs[1] != (Range{4 << 30, 2 << 20}) {
		t.Fatalf("ranges %v", rs)
	}
	check := func(gpa int64, off, n int) {
		t.Helper()
		p := make([]byte, n)
		if got, err := src.ReadAt(p, gpa); err != nil || got != n {
			t.Fatalf("ReadAt(%d, %#x) = %d, %v", n, gpa, got, err)
		}
		if !bytes.Equal(p, data[off:off+n]) {
			t.Errorf("ReadAt(%d, %#x): wrong bytes", n, gpa)
		}
	}
	check(4095, 4095, 10)
	check(1<<20-5, 1<<20-5, 5)
	check(4<<30+4097, 1<<20+4097, 70000)
	// A write after the open is seen.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	copy(data[1<<20+12345:], "NEW-BYTES")
	if _, err := f.WriteAt([]byte("NEW-BYTES"), 1<<20+12345); err != nil {
		t.Fatal(err)
	}
	f.Close()
	check(4<<30+12340, 1<<20+12340, 20)
	// Past the end of a range: the bytes up to it and ErrOutOfRange.
	p := make([]byte, 100)
	if n, err := src.ReadAt(p, 1<<20-40); n != 40 || !errors.Is(err, ErrOutOfRange) || !bytes.Equal(p[:40], data[1<<20-40:1<<20]) {
		t.Errorf("read across the end: %d, %v", n, err)
	}
	if _, err := src.ReadAt(p, 2<<20); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("read in the hole: %v", err)
	}
}
