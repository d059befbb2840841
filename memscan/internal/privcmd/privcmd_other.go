//go:build !linux

package privcmd

import (
	"fmt"
	"runtime"
)

// Available reports that privcmd is Linux-only.
func Available() error {
	return fmt.Errorf("privcmd: Xen foreign mapping is not supported on %s", runtime.GOOS)
}

// Mapping is a foreign mapping; not available on this platform.
type Mapping struct{}

// MapForeign is not supported on this platform.
func MapForeign(domid uint16, frames uint64) (*Mapping, error) { return nil, Available() }

// MapRuns is not supported on this platform.
func MapRuns(domid uint16, span uint64, runs []Run) (*Mapping, error) { return nil, Available() }

// Probe is not supported on this platform.
func Probe(domid uint16, span uint64) ([]int32, error) { return nil, Available() }

// ProbeFrom is not supported on this platform.
func ProbeFrom(domid uint16, start, count uint64) ([]int32, error) { return nil, Available() }

// Runs returns nil.
func (m *Mapping) Runs() []Run { return nil }

// Bytes returns nil.
func (m *Mapping) Bytes() []byte { return nil }

// Errs returns nil.
func (m *Mapping) Errs() []int32 { return nil }

// Copy fails.
func (m *Mapping) Copy(dst []byte, gpa uint64) (int, error) { return 0, Available() }

// Close does nothing.
func (m *Mapping) Close() error { return nil }
