// Package xenctl is the dom0 side's access to the Xen hypervisor through libxenctrl
// and libxenforeignmemory (cgo): giving Domain M privilege over its target
// (xc_domain_set_target), the target's highest guest frame (xc_domain_maximum_gpfn)
// and dom0's own view of a guest frame (a foreign map), the reference the lab checks
// Domain M's finding against.
//
// The cgo code builds only with the build tag xen (and libxen-dev installed), in the
// separate dom0 tool domainm-xen, so that domainm-migrate's QEMU path stays free of
// cgo; without the tag every call returns ErrNotBuilt.
package xenctl

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotBuilt means this binary was built without the xen tag (no libxenctrl).
var ErrNotBuilt = errors.New("xenctl: built without Xen support (go build -tags xen, needs libxen-dev)")

// FrameSize is the size of a guest frame.
const FrameSize = 4096

// FrameRun is a run of consecutive guest frames.
type FrameRun struct{ First, Count uint64 }

// runsOf turns per-frame presence (non-zero = present) into runs.
func runsOf(present []byte) []FrameRun {
	var rs []FrameRun
	for i := 0; i < len(present); {
		if present[i] == 0 {
			i++
			continue
		}
		j := i
		for j < len(present) && present[j] != 0 {
			j++
		}
		rs = append(rs, FrameRun{uint64(i), uint64(j - i)})
		i = j
	}
	return rs
}

// FormatRuns writes runs as "FIRST+COUNT" in hexadecimal separated by spaces: the
// value of Domain M's xenstore node domainm/frames (memscan.ParseXenFrames reads it).
func FormatRuns(rs []FrameRun) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%#x+%#x", r.First, r.Count)
	}
	return b.String()
}
