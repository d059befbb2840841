package supervisor

import (
	"sync/atomic"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/internal/config"
)

// LiveKeys are the configuration keys ApplyConfig changes in a running supervisor
// (systemctl reload); a change to any other key of the supervisor's needs a restart.
var LiveKeys = []string{"memory.interval", "memory.stall_timeout", "disk.interval", "control.quiesce_timeout",
	"rules.disable", "rules.exception", "disk.aggregate_above"}

// liveConfig holds the values of LiveKeys, read by the loops at each use; zero means
// "as in s.cfg" (never reloaded).
type liveConfig struct {
	memInterval, stallTimeout, diskInterval, quiesceTimeout atomic.Int64
	aggregateAbove                                          atomic.Int64 // -1 + value, so that 0 (off) is not "unset"
	// memWake and diskWake tell the loops to plan their next run again.
	memWake, diskWake chan struct{}
	// statusExtra adds what the daemon's wiring knows to status (SetStatusExtra).
	statusExtra atomic.Pointer[func(*proto.StatusDetail)]
	// rules is the rule control in force (rulecontrol.go); nil until first used.
	rules atomic.Pointer[ruleControl]
	// accepts are the baseline changes operators accepted (accept.go); diskNow asks
	// the disk loop, with diskWake, for a check at once.
	accepts accepts
	diskNow atomic.Bool
}

func newLiveConfig() liveConfig {
	return liveConfig{memWake: make(chan struct{}, 1), diskWake: make(chan struct{}, 1)}
}

func liveOr(v *atomic.Int64, d time.Duration) time.Duration {
	if x := v.Load(); x != 0 {
		return time.Duration(x)
	}
	return d
}

func (s *Supervisor) memInterval() time.Duration {
	return liveOr(&s.live.memInterval, s.cfg.Memory.Interval)
}

func (s *Supervisor) stallTimeout() time.Duration {
	return liveOr(&s.live.stallTimeout, s.cfg.Memory.StallTimeout)
}

func (s *Supervisor) diskInterval() time.Duration {
	return liveOr(&s.live.diskInterval, s.cfg.Disk.Interval)
}

func (s *Supervisor) aggregateAbove() int {
	if v := s.live.aggregateAbove.Load(); v != 0 {
		return int(v - 1)
	}
	return s.cfg.Disk.AggregateAbove
}

func (s *Supervisor) quiesceTimeout() time.Duration {
	return liveOr(&s.live.quiesceTimeout, s.cfg.Control.QuiesceTimeout)
}

// ApplyConfig takes the values of LiveKeys from c, a configuration that was loaded and
// validated. A shorter interval takes effect at once (the next pass or check is moved
// forward), a longer one from the next pass or check on.
func (s *Supervisor) ApplyConfig(c *config.Config) {
	s.live.memInterval.Store(int64(c.Memory.Interval))
	s.live.stallTimeout.Store(int64(c.Memory.StallTimeout))
	s.live.diskInterval.Store(int64(c.Disk.Interval))
	s.live.quiesceTimeout.Store(int64(c.Control.QuiesceTimeout))
	s.live.rules.Store(newRuleControl(c.Rules))
	s.live.aggregateAbove.Store(int64(c.Disk.AggregateAbove) + 1)
	for _, ch := range []chan struct{}{s.live.memWake, s.live.diskWake} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// replan moves next forward when the interval became shorter than what is left of it.
func replan(next, now time.Time, interval time.Duration) time.Time {
	if now.Add(interval).Before(next) {
		return now.Add(interval)
	}
	return next
}
