//go:build linux && cgo && xen

package xenctl

/*
#cgo LDFLAGS: -lxenctrl -lxenforeignmemory
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>

static int xenctl_set_target(uint32_t dom, uint32_t target) {
	xc_interface *xch = xc_interface_open(NULL, NULL, 0);
	if (!xch) return -errno;
	int rc = xc_domain_set_target(xch, dom, target);
	int e = errno;
	xc_interface_close(xch);
	return rc ? -e : 0;
}

static int xenctl_max_gpfn(uint32_t dom, unsigned long long *out) {
	xc_interface *xch = xc_interface_open(NULL, NULL, 0);
	if (!xch) return -errno;
	xen_pfn_t g = 0;
	int rc = xc_domain_maximum_gpfn(xch, dom, &g);
	int e = errno;
	xc_interface_close(xch);
	if (rc < 0) return -e;
	*out = g;
	return 0;
}

// Exported by libxenctrl 4.17 (VERS_4.17.0) but declared only in its private header:
// XEN_DOMCTL_getpageframeinfo3 over num frames (at most 1024); each entry in, a frame
// number; out, its type (XEN_DOMCTL_PFINFO_*). The migration stream reads a domain's
// p2m this way.
int xc_get_pfn_type_batch(xc_interface *xch, uint32_t dom, unsigned int num, xen_pfn_t *arr);

// xenctl_frames sets present[i] to 1 when Xen's p2m of dom has a page at frame
// start+i (type neither XTAB, no page, nor BROKEN), for count frames.
static int xenctl_frames(uint32_t dom, unsigned long long start, unsigned long long count, unsigned char *present) {
	xc_interface *xch = xc_interface_open(NULL, NULL, 0);
	if (!xch) return -errno;
	xen_pfn_t arr[1024];
	for (unsigned long long i = 0; i < count; i += 1024) {
		unsigned int n = count - i < 1024 ? count - i : 1024;
		for (unsigned int j = 0; j < n; j++) arr[j] = start + i + j;
		if (xc_get_pfn_type_batch(xch, dom, n, arr)) {
			int e = errno;
			xc_interface_close(xch);
			return -e;
		}
		for (unsigned int j = 0; j < n; j++) {
			unsigned long t = arr[j] & (0xfUL << 28);
			present[i + j] = t != (0xfUL << 28) && t != (0xdUL << 28);
		}
	}
	xc_interface_close(xch);
	return 0;
}

// xenctl_domain_state reads domain dom's state: 0 and *found = 0 when no such domain.
static int xenctl_domain_state(uint32_t dom, int *found, int *dying, int *shutdown, unsigned int *reason, int *paused) {
	xc_interface *xch = xc_interface_open(NULL, NULL, 0);
	if (!xch) return -errno;
	xc_dominfo_t info;
	int n = xc_domain_getinfo(xch, dom, 1, &info);
	int e = errno;
	xc_interface_close(xch);
	if (n < 0) return -e;
	*found = n == 1 && info.domid == dom;
	if (*found) {
		*dying = info.dying;
		*shutdown = info.shutdown;
		*reason = info.shutdown_reason;
		*paused = info.paused;
	}
	return 0;
}

static int xenctl_read_frame(uint32_t dom, unsigned long long gfn, void *dst) {
	xenforeignmemory_handle *fh = xenforeignmemory_open(NULL, 0);
	if (!fh) return -errno;
	xen_pfn_t f = gfn;
	int err = 0;
	void *p = xenforeignmemory_map(fh, dom, PROT_READ, 1, &f, &err);
	if (!p) { int e = errno; xenforeignmemory_close(fh); return -e; }
	if (err) { xenforeignmemory_unmap(fh, p, 1); xenforeignmemory_close(fh); return err; }
	memcpy(dst, p, 4096);
	xenforeignmemory_unmap(fh, p, 1);
	xenforeignmemory_close(fh);
	return 0;
}
*/
import "C"

import (
	"fmt"
	"syscall"
	"unsafe"
)

// SetTarget gives domain dom privilege over domain target (XEN_DOMCTL_set_target).
func SetTarget(dom, target uint32) error {
	if rc := C.xenctl_set_target(C.uint32_t(dom), C.uint32_t(target)); rc != 0 {
		return fmt.Errorf("xc_domain_set_target(%d, %d): %w", dom, target, syscall.Errno(-rc))
	}
	return nil
}

// MaxGPFN returns domain dom's highest guest frame number (XENMEM_maximum_gpfn).
func MaxGPFN(dom uint32) (uint64, error) {
	var g C.ulonglong
	if rc := C.xenctl_max_gpfn(C.uint32_t(dom), &g); rc != 0 {
		return 0, fmt.Errorf("xc_domain_maximum_gpfn(%d): %w", dom, syscall.Errno(-rc))
	}
	return uint64(g), nil
}

// Frames returns the runs of frames 0..maxGPFN that Xen's p2m of domain dom holds
// (XEN_DOMCTL_getpageframeinfo3, 1024 frames a call, as the migration stream reads it).
func Frames(dom uint32, maxGPFN uint64) ([]FrameRun, error) {
	if maxGPFN >= 1<<35 {
		return nil, fmt.Errorf("frames of domain %d: highest frame %#x too high", dom, maxGPFN)
	}
	n := maxGPFN + 1
	present := C.malloc(C.size_t(n))
	defer C.free(present)
	if rc := C.xenctl_frames(C.uint32_t(dom), 0, C.ulonglong(n), (*C.uchar)(present)); rc != 0 {
		return nil, fmt.Errorf("xc_get_pfn_type_batch(domain %d): %w", dom, syscall.Errno(-rc))
	}
	return runsOf(unsafe.Slice((*byte)(present), n)), nil
}

// State reads domain dom's state (xc_domain_getinfo); ok is false when it does not exist.
func State(dom uint32) (st DomainState, ok bool, err error) {
	var found, dying, shutdown, paused C.int
	var reason C.uint
	if rc := C.xenctl_domain_state(C.uint32_t(dom), &found, &dying, &shutdown, &reason, &paused); rc != 0 {
		return DomainState{}, false, fmt.Errorf("xc_domain_getinfo(%d): %w", dom, syscall.Errno(-rc))
	}
	if found == 0 {
		return DomainState{}, false, nil
	}
	return DomainState{Dying: dying != 0, Shutdown: shutdown != 0, Reason: uint(reason), Paused: paused != 0}, true, nil
}

// ReadFrame copies guest frame gfn of domain dom through dom0's own foreign map.
func ReadFrame(dom uint32, gfn uint64) ([]byte, error) {
	buf := C.malloc(FrameSize)
	defer C.free(buf)
	if rc := C.xenctl_read_frame(C.uint32_t(dom), C.ulonglong(gfn), buf); rc != 0 {
		return nil, fmt.Errorf("xenforeignmemory_map(domain %d, frame %#x): %w", dom, gfn, syscall.Errno(-rc))
	}
	return C.GoBytes(unsafe.Pointer(buf), FrameSize), nil
}
