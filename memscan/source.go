// Package memscan reads a target VM's guest-physical memory and feeds it, block by
// block, to a rule engine.
//
// A Source gives read-only access to guest-physical RAM as a list of ranges. Backends
// are chosen by a spec string (see Open): a QEMU shared RAM file or ivshmem BAR
// ("file:"), an ELF core from dump-guest-memory ("elf:"), a Xen domain ("xen:"), or,
// inside a QEMU Domain M, the target's RAM file attached as an nvdimm and found by its
// NFIT handle ("nvdimm:", nvdimm.go).
//
// # Security
//
// Guest memory is attacker-controlled. Nothing read from it is trusted: the scan driver
// only hands bytes to the rule engine, and parsers of guest-produced files (ELF cores)
// bound every length and offset against the file size.
package memscan

import (
	"errors"
	"fmt"
	"io"
	"sort"
)

// Range is a contiguous run of guest-physical memory.
type Range struct {
	GPA  uint64 // first guest-physical address
	Size uint64 // length in bytes
}

// End returns the first address past the range.
func (r Range) End() uint64 { return r.GPA + r.Size }

func (r Range) String() string { return fmt.Sprintf("[%#x-%#x)", r.GPA, r.End()) }

// Source is read-only guest-physical memory.
//
// ReadAt reads len(p) bytes at guest-physical address gpa, which with len(p) must lie
// inside one of Ranges; it follows io.ReaderAt's contract otherwise.
type Source interface {
	Ranges() []Range
	ReadAt(p []byte, gpa int64) (int, error)
	io.Closer
}

// ErrOutOfRange is returned for reads outside every range of a source.
var ErrOutOfRange = errors.New("guest-physical address outside the source's ranges")

// TotalSize is the sum of the sizes of rs.
func TotalSize(rs []Range) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.Size
	}
	return n
}

// normalize sorts ranges by address and checks that they neither overlap nor wrap.
func normalize(rs []Range) ([]Range, error) {
	out := make([]Range, 0, len(rs))
	for _, r := range rs {
		if r.Size == 0 {
			continue
		}
		if r.GPA+r.Size < r.GPA {
			return nil, fmt.Errorf("range %#x+%#x wraps the address space", r.GPA, r.Size)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GPA < out[j].GPA })
	for i := 1; i < len(out); i++ {
		if out[i].GPA < out[i-1].End() {
			return nil, fmt.Errorf("ranges %v and %v overlap", out[i-1], out[i])
		}
	}
	return out, nil
}
