package memscan

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/domainm/domainm/memscan/internal/privcmd"
)

// Xen is a Source over a Xen domain's memory, foreign-mapped read-only through
// /dev/xen/privcmd (IOCTL_PRIVCMD_MMAPBATCH_V2). The caller's domain needs privilege
// over the target (dom0, or XEN_DOMCTL_set_target). Frames the hypervisor refuses to
// map (holes such as the PCI hole of an HVM guest) are left out of Ranges.
type Xen struct {
	domid  uint16
	ranges []Range

	mu sync.RWMutex
	m  *privcmd.Mapping
}

var _ Source = (*Xen)(nil)

const xenPage = 4096

// OpenXen maps domain domid's guest-physical memory holding memBytes of RAM. With
// memBytes zero it reads the domain's static maximum from xenstore
// (/local/domain/DOMID/memory/static-max, in KiB) with xenstore-read.
//
// An HVM guest's RAM is split around the MMIO hole below 4 GiB like QEMU's, and the
// hole's start depends on the toolstack (mmio_hole), so for more than 2 GiB of RAM
// the frames of up to a 2 GiB hole are tried as well; frames Xen refuses are simply
// not in Ranges.
func OpenXen(domid uint16, memBytes uint64) (*Xen, error) {
	if err := privcmd.Available(); err != nil {
		return nil, fmt.Errorf("xen:%d: %w", domid, err)
	}
	if memBytes == 0 {
		var err error
		if memBytes, err = xenStaticMax(domid); err != nil {
			return nil, fmt.Errorf("xen:%d: domain memory size: %w", domid, err)
		}
	}
	frames := xenFrames(memBytes)
	m, err := privcmd.MapForeign(domid, frames)
	if err != nil {
		return nil, fmt.Errorf("xen:%d: %w", domid, err)
	}
	return &Xen{domid: domid, ranges: xenRanges(m.Errs()), m: m}, nil
}

// xenFrames is how many frames from GFN 0 to try for memBytes of RAM.
func xenFrames(memBytes uint64) uint64 {
	span := memBytes
	if span > 2<<30 {
		span += 2 << 30
	}
	return (span + xenPage - 1) / xenPage
}

// xenStaticMax asks xenstore for the domain's maximum memory.
func xenStaticMax(domid uint16) (uint64, error) {
	key := fmt.Sprintf("/local/domain/%d/memory/static-max", domid)
	cmd := exec.Command("xenstore-read", key)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%v: %w: %s", cmd.Args, err, strings.TrimSpace(stderr.String()))
	}
	kib, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || kib == 0 || kib > 1<<42 {
		return 0, fmt.Errorf("%s = %q: not a memory size in KiB", key, strings.TrimSpace(string(out)))
	}
	return kib << 10, nil
}

// xenRanges turns per-frame mapping results (0 = mapped) into ranges of mapped frames.
func xenRanges(errs []int32) []Range {
	var rs []Range
	for i := 0; i < len(errs); {
		if errs[i] != 0 {
			i++
			continue
		}
		j := i
		for j < len(errs) && errs[j] == 0 {
			j++
		}
		rs = append(rs, Range{GPA: uint64(i) * xenPage, Size: uint64(j-i) * xenPage})
		i = j
	}
	return rs
}

// Ranges returns the mapped guest-physical ranges.
func (x *Xen) Ranges() []Range { return append([]Range(nil), x.ranges...) }

func (x *Xen) locate(gpa uint64, n int) (Range, error) {
	for _, r := range x.ranges {
		if gpa >= r.GPA && gpa < r.End() {
			if uint64(n) > r.End()-gpa {
				return r, fmt.Errorf("xen:%d: %#x+%d: range ends at %#x: %w", x.domid, gpa, n, r.End(), ErrOutOfRange)
			}
			return r, nil
		}
	}
	return Range{}, fmt.Errorf("xen:%d: %#x: %w", x.domid, gpa, ErrOutOfRange)
}

// ReadAt copies guest memory at gpa into p.
func (x *Xen) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 {
		return 0, fmt.Errorf("xen:%d: negative address %#x: %w", x.domid, gpa, ErrOutOfRange)
	}
	r, rerr := x.locate(uint64(gpa), len(p))
	if r.Size == 0 {
		return 0, rerr
	}
	n := min(uint64(len(p)), r.End()-uint64(gpa))
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.m == nil {
		return 0, ErrClosed
	}
	c, err := x.m.Copy(p[:n], uint64(gpa))
	if err != nil {
		return c, fmt.Errorf("xen:%d: reading %#x: %w", x.domid, gpa, err)
	}
	return c, rerr
}

// Close unmaps the domain's memory.
func (x *Xen) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		return nil
	}
	err := x.m.Close()
	x.m = nil
	return err
}
