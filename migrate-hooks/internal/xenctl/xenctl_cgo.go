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

// ReadFrame copies guest frame gfn of domain dom through dom0's own foreign map.
func ReadFrame(dom uint32, gfn uint64) ([]byte, error) {
	buf := C.malloc(FrameSize)
	defer C.free(buf)
	if rc := C.xenctl_read_frame(C.uint32_t(dom), C.ulonglong(gfn), buf); rc != 0 {
		return nil, fmt.Errorf("xenforeignmemory_map(domain %d, frame %#x): %w", dom, gfn, syscall.Errno(-rc))
	}
	return C.GoBytes(unsafe.Pointer(buf), FrameSize), nil
}
