package alert

import "time"

// Clock is the dispatcher's time for what it schedules: the reconnect backoff, the
// health grace (Healthy), the rate of spool-full alerts and a sink's last delivery. Tests
// move a fake one instead of sleeping through backoffs and grace periods. The bounds on
// socket I/O (a blocked write, the acknowledgement window, Flush's polling) and event
// timestamps stay on wall time: they measure the network and the kernel, not a schedule.
type Clock interface {
	Now() time.Time
	// After sends the time on the returned channel once d has passed.
	After(d time.Duration) <-chan time.Time
}

// systemClock is the real clock.
type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
