// Package privcmd maps a Xen domain's guest frames read-only through the privcmd
// driver (/dev/xen/privcmd, IOCTL_PRIVCMD_MMAPBATCH_V2), as libxenforeignmemory does.
//
// Like mmap, it holds memscan's unsafe and x/sys/unix code; keep it free of policy.
package privcmd

import "errors"

// DevicePath is the privcmd device of a Xen domain with the xen_privcmd driver.
const DevicePath = "/dev/xen/privcmd"

// ErrNoXen means this system is not a Xen domain (no privcmd device).
var ErrNoXen = errors.New("no " + DevicePath + ": not a Xen domain (or the xen_privcmd driver is not loaded)")

// PageSize is Xen's x86 frame size.
const PageSize = 4096

// batchFrames is how many frames one MMAPBATCH_V2 call maps; it bounds the time a
// single ioctl runs and matches libxenforeignmemory's chunking in spirit.
const batchFrames = 1024

// Run is a run of consecutive guest frame numbers.
type Run struct {
	First uint64 // first frame
	Count uint64 // number of frames
}
