package supervisor

import (
	"context"
	"time"
)

// watchdog pings systemd at half the watchdog interval, but only while every scan loop
// answers a probe and reports progress: a stuck pass (or a deadlocked loop) stops the
// pings, and systemd restarts the daemon.
func (s *Supervisor) watchdog(ctx context.Context) {
	every := s.deps.Watchdog / 2
	warned := false
	for {
		if s.alive(ctx, every) {
			s.deps.Notify("WATCHDOG=1")
			warned = false
		} else if !warned {
			s.log.Error("a scan loop is stuck; not feeding the watchdog", "watchdog", s.deps.Watchdog)
			s.deps.Notify("STATUS=stuck: a scan loop made no progress")
			warned = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// alive asks each loop whether it is healthy, waiting at most wait for each answer.
func (s *Supervisor) alive(ctx context.Context, wait time.Duration) bool {
	probes := []chan chan bool{s.mem.probe}
	if s.disk != nil {
		probes = append(probes, s.disk.probe)
	}
	for _, p := range probes {
		reply := make(chan bool, 1)
		t := time.NewTimer(wait)
		select {
		case p <- reply:
		case <-t.C:
			return false
		case <-ctx.Done():
			t.Stop()
			return false
		}
		ok := false
		select {
		case ok = <-reply:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if !ok {
			return false
		}
	}
	return true
}
