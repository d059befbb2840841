package memscan

import (
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the CPU time the calling thread has used. A worker locks its goroutine
// to its thread for the length of a run, so differences within a run of threadCPU are the worker's own CPU time: the rule
// engine's work, which a loaded machine does not inflate as it inflates wall time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return monotonic()
	}
	return time.Duration(ts.Nano())
}
