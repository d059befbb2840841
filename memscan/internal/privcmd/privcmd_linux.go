//go:build linux

package privcmd

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/domainm/domainm/memscan/internal/mmap"
)

// mmapBatchV2 mirrors struct privcmd_mmapbatch_v2 from Linux include/uapi/xen/privcmd.h.
type mmapBatchV2 struct {
	Num  uint32  // number of frames
	Dom  uint16  // domid_t
	_    uint16  // padding to the 8-byte aligned addr
	Addr uint64  // virtual address of the first frame in our mapping
	Arr  uintptr // const xen_pfn_t *: guest frame numbers
	Err  uintptr // int *: per-frame result, 0 or -errno
}

// ioc builds an ioctl request number like the kernel's _IOC macro.
func ioc(dir, typ, nr, size uintptr) uintptr { return dir<<30 | size<<16 | typ<<8 | nr }

// ioctlMmapBatchV2 is IOCTL_PRIVCMD_MMAPBATCH_V2: _IOC(_IOC_NONE, 'P', 4, sizeof(struct)).
var ioctlMmapBatchV2 = ioc(0, 'P', 4, unsafe.Sizeof(mmapBatchV2{}))

// Available reports whether the privcmd device exists.
func Available() error {
	if _, err := os.Stat(DevicePath); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ErrNoXen
		}
		return err
	}
	return nil
}

// Mapping is a read-only foreign mapping of a set of a domain's frames, each at its
// guest-physical offset in one address range of Span frames; frames outside the set
// are not mapped and read as a fault.
type Mapping struct {
	f     *os.File
	data  []byte
	domid uint16
	runs  []Run
	errs  []int32
}

// MapForeign maps frames 0..frames-1 of domain domid. Frames Xen refuses (holes,
// unpopulated or paged-out frames) have a non-zero entry in Errs and read as a fault.
func MapForeign(domid uint16, frames uint64) (*Mapping, error) {
	return MapRuns(domid, frames, []Run{{0, frames}})
}

// MapRuns maps the frames of runs, all below span, of domain domid.
//
// Linux's privcmd wants the first MMAPBATCH on a mapping to cover all of it (and, in an
// auto-translated domain such as a PVH Domain M, backs all of it with unpopulated
// pages at once), so the span is reserved as one inaccessible range and each chunk of
// at most batchFrames frames of a run is a privcmd mapping of its own, fixed in place.
func MapRuns(domid uint16, span uint64, runs []Run) (*Mapping, error) {
	if span == 0 || span > (1<<47)/PageSize {
		return nil, fmt.Errorf("privcmd: bad frame span %d", span)
	}
	for _, r := range runs {
		if r.Count == 0 || r.First >= span || r.Count > span-r.First {
			return nil, fmt.Errorf("privcmd: frames %d+%d outside the span of %d frames", r.First, r.Count, span)
		}
	}
	f, err := os.OpenFile(DevicePath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNoXen
		}
		return nil, err
	}
	data, err := unix.Mmap(-1, 0, int(span*PageSize), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("privcmd: reserving %d frames of address space: %w", span, err)
	}
	m := &Mapping{f: f, data: data, domid: domid, runs: append([]Run(nil), runs...), errs: make([]int32, span)}
	for i := range m.errs {
		m.errs[i] = -int32(unix.ENOENT) // not asked for
	}
	for _, r := range runs {
		for first := r.First; first < r.First+r.Count; first += batchFrames {
			if err := m.mapChunk(first, min(batchFrames, r.First+r.Count-first)); err != nil {
				m.Close()
				return nil, err
			}
		}
	}
	return m, nil
}

// mapChunk maps frames first..first+cnt-1 as one privcmd mapping over the reserved span.
func (m *Mapping) mapChunk(first, cnt uint64) error {
	addr := uintptr(unsafe.Pointer(&m.data[first*PageSize]))
	_, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, uintptr(cnt*PageSize), unix.PROT_READ,
		unix.MAP_SHARED|unix.MAP_FIXED, m.f.Fd(), 0)
	if errno != 0 {
		return &os.PathError{Op: fmt.Sprintf("mmap frames %d+%d", first, cnt), Path: DevicePath, Err: errno}
	}
	gfns := make([]uint64, cnt)
	for i := range cnt {
		gfns[i] = first + i
		m.errs[first+i] = 0
	}
	b := mmapBatchV2{
		Num:  uint32(cnt),
		Dom:  m.domid,
		Addr: uint64(addr),
		Arr:  uintptr(unsafe.Pointer(&gfns[0])),
		Err:  uintptr(unsafe.Pointer(&m.errs[first])),
	}
	_, _, errno = unix.Syscall(unix.SYS_IOCTL, m.f.Fd(), ioctlMmapBatchV2, uintptr(unsafe.Pointer(&b)))
	runtime.KeepAlive(gfns)
	// ENOENT: some frames are paged out; their errs entries say which. Frames that are
	// not populated leave the call successful, with their own errs entries.
	if errno != 0 && errno != unix.ENOENT {
		return fmt.Errorf("privcmd: ioctl IOCTL_PRIVCMD_MMAPBATCH_V2 (domain %d, frames %d+%d): %w", m.domid, first, cnt, errno)
	}
	return nil
}

// Runs returns the runs of frames asked for (mapped or refused: see Errs).
func (m *Mapping) Runs() []Run { return append([]Run(nil), m.runs...) }

// Bytes returns the mapped frames; index = guest-physical address.
func (m *Mapping) Bytes() []byte { return m.data }

// Errs returns the per-frame mapping results (0 = mapped, else -errno), one per frame
// of the span; frames outside the runs read -ENOENT.
func (m *Mapping) Errs() []int32 { return m.errs }

// Copy copies from guest-physical address gpa into dst, reporting a fault on an
// unmapped frame as an error.
func (m *Mapping) Copy(dst []byte, gpa uint64) (int, error) {
	if gpa > uint64(len(m.data)) {
		return 0, fmt.Errorf("privcmd: address %#x beyond the mapping", gpa)
	}
	return mmap.Copy(dst, m.data[gpa:])
}

// Close unmaps the frames and closes the device.
func (m *Mapping) Close() error {
	var err error
	if m.data != nil {
		err = unix.Munmap(m.data)
		m.data = nil
	}
	if m.f != nil {
		if cerr := m.f.Close(); err == nil {
			err = cerr
		}
		m.f = nil
	}
	return err
}

// Probe asks Xen for frames 0..span-1 of domain domid, one chunk of batchFrames at a
// time, each unmapped again before the next (so that at most one chunk's unpopulated
// backing pages exist at once), and returns the per-frame results (0 = Xen maps it).
func Probe(domid uint16, span uint64) ([]int32, error) { return ProbeFrom(domid, 0, span) }

// ProbeFrom is Probe for frames start..start+count-1; result i is frame start+i.
func ProbeFrom(domid uint16, start, count uint64) ([]int32, error) {
	if count == 0 || start+count > (1<<47)/PageSize || start+count < start {
		return nil, fmt.Errorf("privcmd: bad frames %d+%d", start, count)
	}
	f, err := os.OpenFile(DevicePath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNoXen
		}
		return nil, err
	}
	defer f.Close()
	errs := make([]int32, count)
	gfns := make([]uint64, batchFrames)
	for first := uint64(0); first < count; first += batchFrames {
		cnt := min(batchFrames, count-first)
		data, err := unix.Mmap(int(f.Fd()), 0, int(cnt*PageSize), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return nil, &os.PathError{Op: fmt.Sprintf("mmap frames %d+%d", start+first, cnt), Path: DevicePath, Err: err}
		}
		for i := range cnt {
			gfns[i] = start + first + i
		}
		b := mmapBatchV2{
			Num:  uint32(cnt),
			Dom:  domid,
			Addr: uint64(uintptr(unsafe.Pointer(&data[0]))),
			Arr:  uintptr(unsafe.Pointer(&gfns[0])),
			Err:  uintptr(unsafe.Pointer(&errs[first])),
		}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ioctlMmapBatchV2, uintptr(unsafe.Pointer(&b)))
		runtime.KeepAlive(gfns)
		uerr := unix.Munmap(data)
		if errno != 0 && errno != unix.ENOENT {
			return nil, fmt.Errorf("privcmd: probing frames %d+%d of domain %d: %w", start+first, cnt, domid, errno)
		}
		if uerr != nil {
			return nil, fmt.Errorf("privcmd: unmapping probed frames %d+%d: %w", start+first, cnt, uerr)
		}
	}
	return errs, nil
}
