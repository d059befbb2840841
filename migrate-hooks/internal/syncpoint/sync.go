package syncpoint

import (
	"context"
	"errors"
	"fmt"
	"time"
)

const (
	crawl     = 64 << 10 // bytes/s of a held Domain M stream
	quickDown = time.Millisecond
	// releaseDown lets a released stream converge at its next check.
	releaseDown = 60 * time.Second
	// window is QEMU's rate-limit window: up to max-bandwidth/10 bytes go out in a burst.
	window = 100 * time.Millisecond
)

// holdPlan is how Domain M's stream is capped so that it cannot converge unseen.
type holdPlan struct {
	rate   int64 // Domain M's max-bandwidth until the target stops
	margin int64 // hold once fewer bytes than this remain
}

// plan caps Domain M's rate so that the bytes it can send between two polls, plus a
// burst window, with a 1.5× safety factor, fit in half of its RAM, and sets the margin
// accordingly.
func (r *run) plan(rate int64) holdPlan {
	reaction := window + 4*r.cfg.Poll
	perRate := func(rate int64) int64 { return int64(float64(rate)*reaction.Seconds()*1.5) + 1<<20 }
	if limit := r.m.MemBytes / 2; perRate(rate) > limit {
		rate = max(int64(float64(limit-1<<20)/(reaction.Seconds()*1.5)), 1<<20)
	}
	return holdPlan{rate: rate, margin: perRate(rate)}
}

func (r *run) sync(ctx context.Context) error {
	log := r.cfg.Log
	rateT, rateM := r.cfg.MaxBandwidth, r.cfg.MaxBandwidth
	if r.cfg.Mode == Paced && r.cfg.LinkBandwidth > 0 {
		rateT, rateM = split(r.cfg.LinkBandwidth, r.t.MemBytes, r.m.MemBytes)
	}
	hp := r.plan(rateM)
	if err := r.setup(ctx, rateT, hp.rate, true); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}
	log.Info("migrating", "mode", r.cfg.Mode, "target_rate", rateT, "domm_rate", hp.rate, "hold_margin", hp.margin)
	if err := r.prepareBoth(ctx); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}
	// From the first byte on, Domain M could stop before the target (converge unheld,
	// crash): the guard suspends the target the moment it does, until P1 ends.
	r.guard = r.startGuard(ctx)
	if err := r.t.Src.Migrate(ctx, r.t.URI); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}
	if err := r.m.Src.Migrate(ctx, r.m.URI); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}

	// P1: Domain M runs until the target stops.
	stopEv, err := r.p1(ctx, hp)
	if err != nil {
		return err
	}
	learned := time.Now()
	r.res.P1Detect = Measured(learned.Sub(stopEv.Time))
	// Domain M stays held while the supervisor quiesces: the supervisor needs it running
	// for that, and a prepare that fails must find it still at the source.
	if err := r.m.Src.SetParameters(ctx, Params{MaxBandwidth: crawl}); err != nil {
		return &Error{Phase: "P1", Err: err, Outcome: r.rollbackDomMAtSource(ctx)}
	}
	if err := r.prepare(ctx); err != nil {
		return r.failPrepare(ctx, err)
	}
	if err := r.m.Src.SetParameters(ctx, Params{MaxBandwidth: r.cfg.MaxBandwidth, DowntimeLimit: releaseDown}); err != nil {
		return &Error{Phase: "P2", Err: err, Outcome: r.rollbackDomMAtSource(ctx)}
	}

	// P2: the stopped target waits until Domain M's migration has finished.
	if err := r.p2(ctx); err != nil {
		return err
	}
	r.res.Waits[1] = Measured(time.Since(stopEv.Time))
	if err := r.t.Src.ContinueSwitchover(ctx); err != nil {
		return &Error{Phase: "P2", Err: err, Outcome: r.rollbackAfterDomM(ctx)}
	}

	// P3: Domain M waits (paused, arrived) until the target has arrived at the destination.
	mArrived, tArrived, err := r.p3(ctx)
	if err != nil {
		return err
	}
	r.res.Waits[2] = Measured(max(tArrived.Sub(mArrived), 0))

	return r.p4(ctx, tArrived, r.rollbackFromDestination)
}

// p4: the target stays paused until Domain M runs at the destination and the supervisor
// monitors it there; then it is resumed. (A cont sent to a destination still loading
// only arms autostart: hence P3 waits for both arrivals, and Domain M's run state is
// checked.) arrived is when the later of the two arrived; rollback is what is left to
// do when the destination cannot be made to monitor.
func (r *run) p4(ctx context.Context, arrived time.Time, rollback func(context.Context) string) error {
	if b, ok := r.sup.(Binder); ok {
		if err := b.BindDestination(ctx); err != nil {
			return &Error{Phase: "P4", Err: fmt.Errorf("binding the destination: %w", err), Outcome: rollback(ctx)}
		}
	}
	if err := r.m.Dst.Cont(ctx); err != nil {
		return &Error{Phase: "P4", Err: fmt.Errorf("resuming domain M at the destination: %w", err), Outcome: rollback(ctx)}
	}
	c, cancel := r.short(ctx)
	err := waitRunning(c, r.m.Dst)
	cancel()
	if err != nil {
		return &Error{Phase: "P4", Err: fmt.Errorf("domain M at the destination: %w", err), Outcome: rollback(ctx)}
	}
	if err := r.resume(ctx, false); err != nil {
		return &Error{Phase: "P4", Err: fmt.Errorf("supervisor resume: %w", err), Outcome: rollback(ctx)}
	}
	if err := r.t.Dst.Cont(ctx); err != nil {
		return &Error{Phase: "P4", Err: fmt.Errorf("resuming the target at the destination: %w", err), Outcome: "target paused at destination, domain M monitoring there"}
	}
	r.res.Waits[3] = Measured(time.Since(arrived))
	return nil
}

// split shares link bytes/s between two streams in proportion to the bytes each has to
// send, so that both reach the end of their first pass together.
func split(link, a, b int64) (int64, int64) {
	if a <= 0 || b <= 0 {
		return link, link // nothing to share: one stream is done, or sizes unknown
	}
	ra := int64(float64(link) * float64(a) / float64(a+b))
	return ra, link - ra
}

func (r *run) setup(ctx context.Context, rateT, rateM int64, sync bool) error {
	tcaps := map[string]bool{"events": true, "pause-before-switchover": sync}
	mcaps := map[string]bool{"events": true, "x-ignore-shared": true}
	for _, c := range []struct {
		vm   VM
		caps map[string]bool
	}{{r.t.Src, tcaps}, {r.t.Dst, map[string]bool{"events": true}}, {r.m.Src, mcaps}, {r.m.Dst, mcaps}} {
		if err := c.vm.SetCapabilities(ctx, c.caps); err != nil {
			return fmt.Errorf("%s: %w", c.vm.Where(), err)
		}
	}
	pm := Params{MaxBandwidth: rateM}
	if sync {
		pm.DowntimeLimit = quickDown
	}
	if err := r.m.Src.SetParameters(ctx, pm); err != nil {
		return fmt.Errorf("%s: %w", r.m.Src.Where(), err)
	}
	return r.t.Src.SetParameters(ctx, Params{MaxBandwidth: rateT})
}

// p1 watches both streams until the target stops. It holds Domain M's stream at a crawl
// once its remaining bytes reach the margin, and retunes the rates from the measured
// link: after 500 ms in Sync mode, every 500 ms in Paced mode.
func (r *run) p1(ctx context.Context, hp holdPlan) (Event, error) {
	ctx1, cancel := context.WithTimeout(ctx, r.cfg.P1)
	defer cancel()
	defer r.stopGuard() // the rollbacks below stop it before they restart the target
	var holdStart time.Time
	lastTune, tunes := time.Now(), 0
	from := r.from[r.t.Src]
	for {
		ev, next, err := waitFor(ctx1, r.t.Src, from, r.cfg.Poll, isMigrationStatus("pre-switchover", "failed", "cancelled"))
		from = next
		if fired, gev, _, _, gerr := r.guard.result(); fired {
			// Domain M stopped before the target had: the guard has suspended the target.
			return Event{}, &Error{Phase: "P1", Err: fmt.Errorf("domain M stopped (%s) before the target; target suspended (%v)", gev.Name, gerr), Outcome: r.rollbackDomMFirst(ctx)}
		}
		if err == nil {
			if ev.Status != "pre-switchover" {
				return Event{}, &Error{Phase: "P1", Err: fmt.Errorf("target migration %s: %s", ev.Status, r.progressErr(ctx, r.t.Src)), Outcome: r.abort(ctx)}
			}
			stop, _ := r.lastEvent(r.t.Src, func(e Event) bool { return e.Name == "STOP" })
			if stop.Time.IsZero() {
				stop = ev
			}
			// A hold that began after the target's STOP (the event was in flight) held
			// nothing back.
			r.res.Waits[0] = Measured(0)
			if d := stop.Time.Sub(holdStart); !holdStart.IsZero() && d > 0 {
				r.res.Waits[0] = Measured(d)
			}
			return stop, nil
		}
		if !errors.Is(err, errPoll) {
			return Event{}, &Error{Phase: "P1", Err: fmt.Errorf("waiting for the target to stop: %w", err), Outcome: r.abort(ctx)}
		}
		pm, err := r.m.Src.Progress(ctx1)
		if err != nil {
			return Event{}, &Error{Phase: "P1", Err: err, Outcome: r.abort(ctx)}
		}
		if terminal(pm.Status) {
			return Event{}, &Error{Phase: "P1", Err: fmt.Errorf("domain M migration %s: %s", pm.Status, pm.Error), Outcome: r.abort(ctx)}
		}
		if stopped(pm.Status) {
			// Domain M converged: unless the target had stopped first (its event may still
			// be on its way), the hold came too late. The target is stopped first, asked
			// after: a Stop of a target stopped for its final copy does nothing, while a
			// question first would leave it running one more call.
			c, cancel := r.short(ctx)
			r.t.Src.Stop(c)
			cancel()
			if r.targetStopped(ctx1) {
				continue
			}
			r.cfg.Log.Error("P1 violated: domain M stopped before the target; target stopped", "domm_status", pm.Status)
			return Event{}, &Error{Phase: "P1", Err: errors.New("domain M stopped before the target"), Outcome: r.rollbackDomMFirst(ctx)}
		}
		if pm.Status != "active" || pm.Total == 0 {
			continue
		}
		if holdStart.IsZero() && pm.Remaining < hp.margin {
			if err := r.m.Src.SetParameters(ctx1, Params{MaxBandwidth: crawl}); err != nil {
				return Event{}, &Error{Phase: "P1", Err: err, Outcome: r.abort(ctx)}
			}
			holdStart = time.Now()
			r.res.Held = true
			r.cfg.Log.Info("P1: holding domain M", "remaining", pm.Remaining)
			// The target has the link to itself now.
			if err := r.t.Src.SetParameters(ctx1, Params{MaxBandwidth: r.cfg.MaxBandwidth}); err != nil {
				return Event{}, &Error{Phase: "P1", Err: err, Outcome: r.abort(ctx)}
			}
			continue
		}
		if holdStart.IsZero() && time.Since(lastTune) > 500*time.Millisecond && (tunes == 0 || r.cfg.Mode == Paced) {
			hp, err = r.retune(ctx1, pm, time.Since(lastTune), hp)
			if err != nil {
				return Event{}, &Error{Phase: "P1", Err: err, Outcome: r.abort(ctx)}
			}
			lastTune, tunes = time.Now(), tunes+1
		}
	}
}

// targetStopped reports whether the target has stopped for its final copy already (its
// event may still be on its way when Domain M's status is polled).
func (r *run) targetStopped(ctx context.Context) bool {
	if _, ok := r.lastEvent(r.t.Src, isMigrationStatus("pre-switchover")); ok {
		return true
	}
	pt, err := r.t.Src.Progress(ctx)
	return err == nil && stopped(pt.Status)
}

// retune measures the link from the RAM both streams covered since the last tune.
// Domain M's cap comes down to 1.5× that (a tighter cap means a smaller hold margin,
// hence less left to send at P2); in Paced mode the link is split by what each stream
// still has to send, so that both reach their end of pre-copy together.
func (r *run) retune(ctx context.Context, pm Progress, elapsed time.Duration, hp holdPlan) (holdPlan, error) {
	pt, err := r.t.Src.Progress(ctx)
	if err != nil {
		return hp, err
	}
	done := (pt.Total - pt.Remaining) + (pm.Total - pm.Remaining)
	link := int64(float64(done-r.lastDone) / elapsed.Seconds())
	r.lastDone = done
	if link <= 0 {
		return hp, nil
	}
	rateT, rateM := r.cfg.MaxBandwidth, int64(1.5*float64(link))
	if r.cfg.Mode == Paced {
		l := r.cfg.LinkBandwidth
		if l == 0 {
			l = link
		}
		rateT, rateM = split(l, pt.Remaining, pm.Remaining)
	}
	if rateM > hp.rate {
		rateM = hp.rate
	}
	np := r.plan(rateM)
	r.cfg.Log.Info("retuned", "link", link, "target_rate", rateT, "domm_rate", np.rate, "margin", np.margin)
	if err := r.m.Src.SetParameters(ctx, Params{MaxBandwidth: np.rate}); err != nil {
		return hp, err
	}
	return np, r.t.Src.SetParameters(ctx, Params{MaxBandwidth: rateT})
}

// p2 waits for Domain M's outgoing migration to complete.
func (r *run) p2(ctx context.Context) error {
	ctx2, cancel := context.WithTimeout(ctx, r.cfg.P2)
	defer cancel()
	ev, _, err := r.m.Src.WaitEvent(ctx2, r.from[r.m.Src], isMigrationStatus("completed", "failed", "cancelled"))
	if err != nil {
		return &Error{Phase: "P2", Err: fmt.Errorf("waiting for domain M's migration: %w", err), Outcome: r.rollbackDomMAtSource(ctx)}
	}
	if ev.Status != "completed" {
		return &Error{Phase: "P2", Err: fmt.Errorf("domain M migration %s: %s", ev.Status, r.progressErr(ctx, r.m.Src)), Outcome: r.rollbackDomMAtSource(ctx)}
	}
	// A destination that died while the target was held would make the target's final
	// copy fail, and QEMU would then restart the target at the source: check first.
	c, cancel := r.short(ctx)
	defer cancel()
	if _, err := r.t.Dst.Running(c); err != nil {
		return &Error{Phase: "P2", Err: fmt.Errorf("target's destination is gone: %w", err), Outcome: r.rollbackAfterDomM(ctx)}
	}
	return nil
}

// p3 waits until the target's final copy has left the source and both incoming
// migrations have completed; it returns when Domain M and the target arrived.
func (r *run) p3(ctx context.Context) (mArrived, tArrived time.Time, err error) {
	ctx3, cancel := context.WithTimeout(ctx, r.cfg.P3)
	defer cancel()
	done := func(vm VM) (time.Time, error) {
		ev, _, err := vm.WaitEvent(ctx3, r.from[vm], isMigrationStatus("completed", "failed", "cancelled"))
		if err == nil && ev.Status != "completed" {
			err = fmt.Errorf("%s: migration %s", vm.Where(), ev.Status)
		}
		return ev.Time, err
	}
	if _, err := done(r.t.Src); err != nil {
		return mArrived, tArrived, &Error{Phase: "P3", Err: fmt.Errorf("target's final copy: %w", err), Outcome: r.recoverTargetRestart(ctx)}
	}
	if mArrived, err = done(r.m.Dst); err != nil {
		return mArrived, tArrived, &Error{Phase: "P3", Err: fmt.Errorf("domain M's arrival: %w", err), Outcome: r.rollbackFromDestination(ctx)}
	}
	if tArrived, err = done(r.t.Dst); err != nil {
		return mArrived, tArrived, &Error{Phase: "P3", Err: fmt.Errorf("target's arrival: %w", err), Outcome: r.rollbackFromDestination(ctx)}
	}
	return mArrived, tArrived, nil
}

func (r *run) progressErr(ctx context.Context, vm VM) string {
	c, cancel := r.short(ctx)
	defer cancel()
	p, err := vm.Progress(c)
	if err != nil {
		return err.Error()
	}
	if p.Error == "" {
		return "no reason given"
	}
	return p.Error
}

var errPoll = errors.New("poll interval elapsed")

// waitFor waits at most d for a matching event; errPoll when none came.
func waitFor(ctx context.Context, vm VM, from int, d time.Duration, match func(Event) bool) (Event, int, error) {
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	ev, next, err := vm.WaitEvent(c, from, match)
	if err != nil && ctx.Err() == nil && c.Err() != nil {
		return ev, next, errPoll
	}
	return ev, next, err
}

// lastEvent returns the last matching event of this co-migration (a VM migrated before
// has older ones).
func (r *run) lastEvent(vm VM, match func(Event) bool) (Event, bool) {
	evs := vm.Events()
	for i := len(evs) - 1; i >= r.from[vm]; i-- {
		if match(evs[i]) {
			return evs[i], true
		}
	}
	return Event{}, false
}
