package mmap

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// FaultError reports a memory fault while reading a mapping, typically SIGBUS because
// the file shrank under the mapping (a RAM file truncated, a device removed).
type FaultError struct {
	Addr uintptr // faulting address, 0 when unknown
}

func (e *FaultError) Error() string {
	return fmt.Sprintf("memory fault reading mapped file at address %#x (file truncated or device gone?)", e.Addr)
}

// Copy copies src into dst like the built-in copy, but turns a memory fault into a
// *FaultError instead of crashing the process.
func Copy(dst, src []byte) (n int, err error) {
	if err = Do(func() { n = copy(dst, src) }); err != nil {
		n = 0
	}
	return n, err
}

// Do runs fn, turning a memory fault while it runs (fn reading a mapping whose file
// shrank) into a *FaultError instead of crashing the process. fn must be Go code: a
// fault inside C code cannot be caught this way.
func Do(fn func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			re, ok := r.(runtime.Error)
			if !ok {
				panic(r)
			}
			fe := &FaultError{}
			if a, ok := re.(interface{ Addr() uintptr }); ok {
				fe.Addr = a.Addr()
			}
			err = fe
		}
	}()
	fn()
	return nil
}
