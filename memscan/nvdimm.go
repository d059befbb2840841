package memscan

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// An nvdimm source ("nvdimm:handle=N") is the target's RAM file as Domain M sees it
// inside a QEMU VM: QEMU attaches the file (memory-backend-file,share=on) as an
// nvdimm and the guest kernel makes it a pmem block device. Which /dev/pmemK it becomes
// depends on probe order (a second nvdimm can take pmem0), so the source names the
// nvdimm by its NFIT device handle, which the guest kernel shows in
// /sys/bus/nd/devices/nmemN/nfit/handle and QEMU derives from the device's slot
// property (handle = slot + 1; libvirt: <address type='dimm' slot='N'/>). QEMU 7.2's
// nvdimm "uuid" property is not visible to an x86 guest (it is for ppc's PAPR
// nvdimms), and labels would be stored inside the backend, that is in the target's RAM.
//
// The device is read with pread and O_DIRECT, never mapped: a mapping of a pmem block
// device goes through the guest's page cache, which would keep serving the first
// copy of a page while the target rewrites it.
//
// The nvdimm's contents are the target's: a page of them that looks like a BTT, PFN or
// DAX info block makes the guest kernel claim the namespace for that mode and show
// different bytes at different offsets. The resolver takes only a raw namespace
// (namespaceR.N/block/pmemK) and reports any other claim as an error.

// NVDIMMSysfs and NVDIMMDev are where the resolver looks; tests point them elsewhere.
var (
	NVDIMMSysfs = "/sys"
	NVDIMMDev   = "/dev"
)

// NVDIMMMissingError says that no nvdimm with the expected handle is present. It
// matches fs.ErrNotExist, so callers that wait for a missing RAM file wait for it too.
type NVDIMMMissingError struct {
	Handle uint32
	Seen   []string // the nvdimms that are there, "nmemN=handle"
}

func (e *NVDIMMMissingError) Error() string {
	seen := "none"
	if len(e.Seen) > 0 {
		seen = strings.Join(e.Seen, ", ")
	}
	return fmt.Sprintf("no nvdimm with NFIT handle %#x (QEMU -device nvdimm,slot=%d) under /sys/bus/nd/devices; present: %s",
		e.Handle, int64(e.Handle)-1, seen)
}

// Is makes the error match fs.ErrNotExist.
func (e *NVDIMMMissingError) Is(target error) bool { return target == fs.ErrNotExist }

// ParseNVDIMM parses the argument of an nvdimm: spec, "handle=N" (decimal or 0x hex).
func ParseNVDIMM(arg string) (uint32, error) {
	k, v, ok := strings.Cut(arg, "=")
	if !ok || k != "handle" {
		return 0, fmt.Errorf("nvdimm source %q: want handle=N (the NFIT handle: QEMU slot + 1)", arg)
	}
	h, err := strconv.ParseUint(v, 0, 32)
	if err != nil || h == 0 {
		return 0, fmt.Errorf("nvdimm source %q: handle %q is not a number from 1 to 2^32-1", arg, v)
	}
	return uint32(h), nil
}

// FindNVDIMM returns the pmem block device of the nvdimm with NFIT handle h.
func FindNVDIMM(h uint32) (string, error) {
	devs := filepath.Join(NVDIMMSysfs, "bus/nd/devices")
	nmems, _ := filepath.Glob(filepath.Join(devs, "nmem*"))
	var nmem string
	var seen []string
	for _, d := range nmems {
		b, err := os.ReadFile(filepath.Join(d, "nfit/handle"))
		if err != nil {
			continue // not an NFIT dimm
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 32)
		if err != nil {
			continue
		}
		seen = append(seen, fmt.Sprintf("%s=%#x", filepath.Base(d), v))
		if uint32(v) == h {
			nmem = filepath.Base(d)
		}
	}
	if nmem == "" {
		return "", &NVDIMMMissingError{Handle: h, Seen: seen}
	}
	regions, _ := filepath.Glob(filepath.Join(devs, "region*"))
	for _, r := range regions {
		n, err := readInt(filepath.Join(r, "mappings"))
		if err != nil {
			continue
		}
		for i := 0; i < n; i++ {
			b, err := os.ReadFile(filepath.Join(r, fmt.Sprintf("mapping%d", i)))
			if err != nil || strings.Split(strings.TrimSpace(string(b)), ",")[0] != nmem {
				continue
			}
			if n != 1 {
				return "", fmt.Errorf("nvdimm %s (handle %#x): %s interleaves %d dimms; want the target's RAM alone", nmem, h, filepath.Base(r), n)
			}
			return regionBlockDevice(r, nmem, h)
		}
	}
	return "", fmt.Errorf("nvdimm %s (handle %#x): no region maps it (nd_pmem not loaded yet?): %w", nmem, h, fs.ErrNotExist)
}

// regionBlockDevice returns /dev/pmemK of the region's raw namespace.
func regionBlockDevice(region, nmem string, h uint32) (string, error) {
	for _, claim := range []string{"btt*", "pfn*", "dax*"} {
		// An idle seed device (btt0.0, ...) has no block device and no namespace.
		ms, _ := filepath.Glob(filepath.Join(region, claim, "namespace"))
		for _, m := range ms {
			if b, _ := os.ReadFile(m); strings.TrimSpace(string(b)) != "" {
				return "", fmt.Errorf("nvdimm %s (handle %#x): %s claims %s (an info block in the target's memory?): refusing anything but a raw namespace",
					nmem, h, filepath.Base(filepath.Dir(m)), strings.TrimSpace(string(b)))
			}
		}
	}
	blocks, _ := filepath.Glob(filepath.Join(region, "namespace*", "block", "pmem*"))
	switch len(blocks) {
	case 1:
		return filepath.Join(NVDIMMDev, filepath.Base(blocks[0])), nil
	case 0:
		return "", fmt.Errorf("nvdimm %s (handle %#x): %s has no raw pmem block device yet (nd_pmem not bound?): %w", nmem, h, filepath.Base(region), fs.ErrNotExist)
	}
	return "", fmt.Errorf("nvdimm %s (handle %#x): %s has %d block devices; want one raw namespace", nmem, h, filepath.Base(region), len(blocks))
}

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// OpenNVDIMM opens the nvdimm named by arg ("handle=N", see ParseNVDIMM) and lays it
// out in guest-physical memory by l, as the target's RAM file would be.
func OpenNVDIMM(arg string, l Layout) (*DirectFile, error) {
	h, err := ParseNVDIMM(arg)
	if err != nil {
		return nil, err
	}
	dev, err := FindNVDIMM(h)
	if err != nil {
		return nil, err
	}
	return OpenDirect(dev, l)
}

// DirectFile is a Source read with pread, with O_DIRECT where the file supports it (a
// block device: every read comes from the device, not from a cached copy).
type DirectFile struct {
	path    string
	f       *os.File
	extents []Extent
	ranges  []Range
}

var _ Source = (*DirectFile)(nil)

// directAlign is the alignment of O_DIRECT offsets, lengths and buffers.
const directAlign = 4096

// OpenDirect opens path for reading (O_DIRECT when the filesystem allows it) and lays
// it out by l.
func OpenDirect(path string, l Layout) (*DirectFile, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) { // no O_DIRECT here (tmpfs): its page cache is the file
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, err
	}
	size, err := fileSize(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	ext, err := l.Extents(uint64(size))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d := &DirectFile{path: path, f: f, extents: ext, ranges: make([]Range, len(ext))}
	for i, e := range ext {
		d.ranges[i] = Range{GPA: e.GPA, Size: e.Size}
	}
	return d, nil
}

// Path returns the device or file read.
func (d *DirectFile) Path() string { return d.path }

// Ranges returns the guest-physical ranges, sorted by address.
func (d *DirectFile) Ranges() []Range { return append([]Range(nil), d.ranges...) }

// ReadAt copies guest memory at gpa into p; as MappedFile.ReadAt, a read running past
// the end of its range returns the bytes up to there and an error matching
// ErrOutOfRange. It is safe for concurrent use.
func (d *DirectFile) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 {
		return 0, fmt.Errorf("reading %#x: negative address: %w", gpa, ErrOutOfRange)
	}
	var e Extent
	found := false
	for _, x := range d.extents {
		if uint64(gpa) >= x.GPA && uint64(gpa) < x.GPA+x.Size {
			e, found = x, true
			break
		}
	}
	if !found {
		return 0, fmt.Errorf("reading %#x: %w", gpa, ErrOutOfRange)
	}
	rel := uint64(gpa) - e.GPA
	want := min(uint64(len(p)), e.Size-rel)
	off := int64(e.Offset + rel)
	// Aligned window around [off, off+want) in an aligned buffer.
	start := off &^ (directAlign - 1)
	end := (off + int64(want) + directAlign - 1) &^ (directAlign - 1)
	buf := alignedBuf(int(end - start))
	n, err := readFull(d.f, buf, start)
	got := max(0, min(int64(n)-(off-start), int64(want)))
	copy(p, buf[off-start:off-start+got])
	if err != nil && (err != io.EOF || uint64(got) < want) {
		return int(got), fmt.Errorf("reading %s at offset %#x (guest-physical %#x): %w", d.path, off, gpa, err)
	}
	if uint64(len(p)) > want {
		return int(want), fmt.Errorf("reading %#x+%#x: past the end of %v: %w", gpa, len(p), Range{GPA: e.GPA, Size: e.Size}, ErrOutOfRange)
	}
	return int(want), nil
}

func readFull(f *os.File, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.ReadAt(buf[n:], off+int64(n))
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// alignedBuf returns n bytes starting at a directAlign boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % directAlign); r != 0 {
		skip = directAlign - r
	}
	return b[skip : skip+n : skip+n]
}

// Close closes the device.
func (d *DirectFile) Close() error { return d.f.Close() }
