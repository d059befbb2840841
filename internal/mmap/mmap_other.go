//go:build !linux

package mmap

import (
	"fmt"
	"os"
	"runtime"
)

// Mapping is a read-only mapping of a file; see the Linux implementation.
type Mapping struct{}

// Map is not implemented on this platform.
func Map(f *os.File, size int64) (*Mapping, error) {
	return nil, fmt.Errorf("mmap %s: not supported on %s", f.Name(), runtime.GOOS)
}

// Bytes returns nil.
func (m *Mapping) Bytes() []byte { return nil }

// Release does nothing.
func (m *Mapping) Release(off, n int64) error { return nil }

// Resident reports false: nothing is mapped.
func (m *Mapping) Resident(off, n int64) (bool, error) { return false, nil }

// Close does nothing.
func (m *Mapping) Close() error { return nil }
