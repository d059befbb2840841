package mmap

import (
	"os"

	"github.com/domainm/domainm/internal/mmap"
)

// FaultError reports a memory fault while reading a mapping; see internal/mmap.
type FaultError = mmap.FaultError

// Mapping is a read-only, shared mapping of a file; see internal/mmap.
type Mapping = mmap.Mapping

// Map maps size bytes of f from offset 0 read-only and shared; see internal/mmap.
func Map(f *os.File, size int64) (*Mapping, error) { return mmap.Map(f, size) }

// Copy is copy that turns a memory fault into a *FaultError; see internal/mmap.
func Copy(dst, src []byte) (int, error) { return mmap.Copy(dst, src) }

// Do runs fn, turning a memory fault into a *FaultError; see internal/mmap.
func Do(fn func()) error { return mmap.Do(fn) }
