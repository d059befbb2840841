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

// Mapping is a read-only foreign mapping of frames 0..n-1 of a domain.
type Mapping struct {
	f    *os.File
	data []byte
	errs []int32
}

// MapForeign maps frames 0..frames-1 of domain domid. Frames Xen refuses (holes,
// unpopulated or paged-out frames) have a non-zero entry in Errs and read as a fault.
func MapForeign(domid uint16, frames uint64) (*Mapping, error) {
	if frames == 0 || frames > (1<<47)/PageSize {
		return nil, fmt.Errorf("privcmd: bad frame count %d", frames)
	}
	f, err := os.OpenFile(DevicePath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNoXen
		}
		return nil, err
	}
	size := int(frames * PageSize)
	data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "mmap", Path: DevicePath, Err: err}
	}
	m := &Mapping{f: f, data: data, errs: make([]int32, frames)}
	if err := m.mapAll(domid); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Mapping) mapAll(domid uint16) error {
	n := uint64(len(m.errs))
	gfns := make([]uint64, batchFrames)
	base := uint64(uintptr(unsafe.Pointer(&m.data[0])))
	for first := uint64(0); first < n; first += batchFrames {
		cnt := min(batchFrames, n-first)
		for i := range cnt {
			gfns[i] = first + i
		}
		b := mmapBatchV2{
			Num:  uint32(cnt),
			Dom:  domid,
			Addr: base + first*PageSize,
			Arr:  uintptr(unsafe.Pointer(&gfns[0])),
			Err:  uintptr(unsafe.Pointer(&m.errs[first])),
		}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, m.f.Fd(), ioctlMmapBatchV2, uintptr(unsafe.Pointer(&b)))
		runtime.KeepAlive(gfns)
		// ENOENT: some frames are paged out; their errs entries say which.
		if errno != 0 && errno != unix.ENOENT {
			return fmt.Errorf("privcmd: ioctl IOCTL_PRIVCMD_MMAPBATCH_V2 (domain %d, frames %d+%d): %w", domid, first, cnt, errno)
		}
	}
	return nil
}

// Bytes returns the mapped frames; index = guest-physical address.
func (m *Mapping) Bytes() []byte { return m.data }

// Errs returns the per-frame mapping results (0 = mapped, else -errno).
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
