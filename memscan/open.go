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
	// XenMemory is the Xen domain's memory size in bytes; zero reads it from xenstore.
	XenMemory uint64
}

// Open opens the memory source named by spec:
//
//	file:PATH   QEMU memory-backend-file RAM file, ivshmem resource2 BAR, or raw dump
//	elf:PATH    ELF core from QEMU dump-guest-memory (physical addresses, paging=false)
//	xen:DOMID   a Xen domain's memory through /dev/xen/privcmd
func Open(spec string, opts OpenOptions) (Source, error) {
	kind, arg, ok := strings.Cut(spec, ":")
	if !ok || arg == "" {
		return nil, fmt.Errorf("memory source %q: want file:PATH, elf:PATH or xen:DOMID", spec)
	}
	if kind != "file" && opts.Layout.kind != "" && opts.Layout.kind != "flat" {
		return nil, fmt.Errorf("memory source %q: layout %s applies only to file: sources", spec, opts.Layout)
	}
	switch kind {
	case "file":
		return OpenFile(arg, opts.Layout)
	case "elf":
		return OpenELF(arg)
	case "xen":
		id, err := strconv.ParseUint(arg, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("memory source %q: bad domain id: %w", spec, err)
		}
		return OpenXen(uint16(id), opts.XenMemory)
	}
	return nil, fmt.Errorf("memory source %q: unknown kind %q (want file, elf or xen)", spec, kind)
}
