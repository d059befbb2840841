package memscan

import (
	"fmt"
	"strconv"
	"strings"
)

// OpenOptions tune Open.
type OpenOptions struct {
	// Layout maps a file: source's offsets to guest-physical addresses (--layout).
	// It must be flat (the zero value) for other backends.
	Layout Layout
	// XenMaxGPFN is the Xen domain's highest guest frame (XENMEM_maximum_gpfn, which
	// Domain M learns from the dom0 tool): frames 0..XenMaxGPFN are asked for.
	XenMaxGPFN uint64
	// XenFrames are the Xen domain's frames to map, as dom0 read them from Xen's p2m
	// (domainm-xen grant writes them to Domain M's xenstore node domainm/frames;
	// ParseXenFrames): only these are asked for, and XenMaxGPFN is not used.
	XenFrames []Range
}

// Open opens the memory source named by spec:
//
//	file:PATH   QEMU memory-backend-file RAM file, ivshmem resource2 BAR, or raw dump
//	elf:PATH    ELF core from QEMU dump-guest-memory (physical addresses, paging=false)
//	xen:DOMID   a Xen domain's memory through /dev/xen/privcmd
//	nvdimm:handle=N  inside a QEMU Domain M, the target's RAM file as an nvdimm, found by
//	            its NFIT handle (QEMU slot + 1), read with O_DIRECT (see OpenNVDIMM)
//	disk:PATH   inside a libvirt Domain M, the target's RAM file as a read-only virtio
//	            disk (/dev/disk/by-id/virtio-domainm-view), read with O_DIRECT (OpenDisk)
func Open(spec string, opts OpenOptions) (Source, error) {
	kind, arg, ok := strings.Cut(spec, ":")
	if !ok || arg == "" {
		return nil, fmt.Errorf("memory source %q: want file:PATH, elf:PATH, xen:DOMID, nvdimm:handle=N or disk:PATH", spec)
	}
	if kind != "file" && kind != "nvdimm" && kind != "disk" && opts.Layout.kind != "" && opts.Layout.kind != "flat" {
		return nil, fmt.Errorf("memory source %q: layout %s applies only to file:, nvdimm: and disk: sources", spec, opts.Layout)
	}
	switch kind {
	case "file":
		return OpenFile(arg, opts.Layout)
	case "elf":
		return OpenELF(arg)
	case "nvdimm":
		return OpenNVDIMM(arg, opts.Layout)
	case "disk":
		return OpenDisk(arg, opts.Layout)
	case "xen":
		id, err := strconv.ParseUint(arg, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("memory source %q: bad domain id: %w", spec, err)
		}
		if len(opts.XenFrames) > 0 {
			return OpenXenFrames(uint16(id), opts.XenFrames)
		}
		return OpenXen(uint16(id), opts.XenMaxGPFN)
	}
	return nil, fmt.Errorf("memory source %q: unknown kind %q (want file, elf, xen, nvdimm or disk)", spec, kind)
}
