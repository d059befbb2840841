//go:build !linux

package memscan

import "time"

// threadCPU stands for the thread's CPU time where it cannot be read: wall time.
func threadCPU() time.Duration { return monotonic() }
