package syncpoint

import (
	"context"
	"sync"
	"time"
)

// guard suspends the target the moment Domain M's source reports STOP or SHUTDOWN
// while P1 runs, i.e. before the target has stopped for its final copy: Domain M
// converged unheld, crashed, or was paused. It reacts to the hypervisor's event, not
// to the P1 poll (which only sees Domain M's migration status, and runs behind a
// Progress call that takes long on a loaded host), and its first and only call is the
// target's Stop. The unwatched interval is Domain M's STOP → the target's STOP in the
// timeline; the guard's own part is Detect (event → seen) and Pause (seen → Stop
// returned).
type guard struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	fired  bool
	ev     Event // Domain M's STOP or SHUTDOWN
	seen   time.Time
	paused time.Time
	err    error // the target's Stop
}

// startGuard watches r.m.Src from the start of this co-migration until stop.
func (r *run) startGuard(ctx context.Context) *guard {
	gctx, cancel := context.WithCancel(ctx)
	g := &guard{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(g.done)
		ev, _, err := r.m.Src.WaitEvent(gctx, r.from[r.m.Src], func(e Event) bool { return e.Name == "STOP" || e.Name == "SHUTDOWN" })
		if err != nil {
			return
		}
		seen := time.Now()
		c, cancel := r.short(ctx)
		serr := r.t.Src.Stop(c) // a no-op when the target has stopped already
		cancel()
		g.mu.Lock()
		g.fired, g.ev, g.seen, g.paused, g.err = true, ev, seen, time.Now(), serr
		g.mu.Unlock()
		r.cfg.Log.Error("domain M stopped during P1: target suspended", "event", ev.Name,
			"detect", seen.Sub(ev.Time), "pause", g.paused.Sub(seen), "err", serr)
	}()
	return g
}

// stop ends the watch and waits for it: a Stop already under way is finished. Safe
// on a nil guard and more than once.
func (g *guard) stop() {
	if g == nil {
		return
	}
	g.cancel()
	<-g.done
}

// stopGuard ends the guard before the coordinator restarts the target itself, and
// records its figures.
func (r *run) stopGuard() {
	r.guard.stop()
	if fired, _, detect, pause, _ := r.guard.result(); fired {
		r.res.GuardDetect, r.res.GuardPause = Measured(detect), Measured(pause)
	}
}

// result reports whether the guard fired, and on what.
func (g *guard) result() (fired bool, ev Event, detect, pause time.Duration, err error) {
	if g == nil {
		return false, Event{}, 0, 0, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.fired {
		return false, Event{}, 0, 0, nil
	}
	return true, g.ev, g.seen.Sub(g.ev.Time), g.paused.Sub(g.seen), g.err
}
