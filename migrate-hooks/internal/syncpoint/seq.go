package syncpoint

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// sequential keeps P1–P4 by order, for a hypervisor that cannot hold a stopped VM at
// its switchover (Xen): the target migrates first; Domain M monitors it until it stops
// for its last copy (P1) and is told to quiesce then, while the target's source still
// exists; Domain M migrates once the target's copy has left, the target stopped (its
// destination copy paused) meanwhile (P2); P3 and P4 as in Sync. Neither stream is
// throttled: Domain M's stream starts only after the target's has ended.
func (r *run) sequential(ctx context.Context) error {
	if err := r.setup(ctx, r.cfg.MaxBandwidth, r.cfg.MaxBandwidth, false); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}
	if err := r.prepareBoth(ctx); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}
	// Domain M is not migrating during P1, but it can still stop (crash, an operator's
	// pause): the guard suspends the target then, as in Sync.
	r.guard = r.startGuard(ctx)
	if err := r.t.Src.Migrate(ctx, r.t.URI); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}

	// P1: Domain M monitors until the target stops for its last copy.
	stop, err := r.seqP1(ctx)
	if err != nil {
		return err
	}
	r.res.Waits[0] = Measured(max(stop.Time.Sub(r.res.Start), 0))
	r.res.P1Detect = Measured(time.Since(stop.Time))
	if err := r.prepare(ctx); err != nil {
		return r.seqFailPrepare(ctx, err)
	}

	// The target's last copy: it arrives paused, or its source is restarted.
	if err := r.seqTargetCopied(ctx); err != nil {
		return err
	}

	// P2: Domain M migrates while the stopped target waits.
	if err := r.m.Src.Migrate(ctx, r.m.URI); err != nil {
		return &Error{Phase: "P2", Err: fmt.Errorf("starting domain M's migration: %w", err), Outcome: r.seqRollback(ctx)}
	}
	ctx2, cancel := context.WithTimeout(ctx, r.cfg.P2)
	ev, _, err := r.m.Src.WaitEvent(ctx2, r.from[r.m.Src], isMigrationStatus("completed", "failed", "cancelled"))
	cancel()
	if err == nil && ev.Status != "completed" {
		err = fmt.Errorf("domain M migration %s: %s", ev.Status, r.progressErr(ctx, r.m.Src))
	}
	if err != nil {
		c, cancel := r.short(ctx)
		r.m.Src.CancelMigration(c)
		cancel()
		return &Error{Phase: "P2", Err: fmt.Errorf("domain M's migration: %w", err), Outcome: r.seqRollback(ctx)}
	}
	r.res.Waits[1] = Measured(ev.Time.Sub(stop.Time))

	// P3: both arrive (the target first).
	ctx3, cancel := context.WithTimeout(ctx, r.cfg.P3)
	defer cancel()
	var arrived [2]time.Time
	for i, vm := range []VM{r.t.Dst, r.m.Dst} {
		ev, _, err := vm.WaitEvent(ctx3, r.from[vm], isMigrationStatus("completed", "failed", "cancelled"))
		if err == nil && ev.Status != "completed" {
			err = fmt.Errorf("migration %s", ev.Status)
		}
		if err != nil {
			return &Error{Phase: "P3", Err: fmt.Errorf("%s's arrival: %w", vm.Where(), err), Outcome: r.seqRollback(ctx)}
		}
		arrived[i] = ev.Time
	}
	r.res.Waits[2] = Measured(max(arrived[0].Sub(arrived[1]), 0))
	last := arrived[0]
	if arrived[1].After(last) {
		last = arrived[1]
	}
	return r.p4(ctx, last, r.seqRollback)
}

// seqP1 waits for the target to stop for its last copy: its STOP event, or its
// migration's completion where the stop was not seen (the latest it can have stopped).
func (r *run) seqP1(ctx context.Context) (Event, error) {
	ctx1, cancel := context.WithTimeout(ctx, r.cfg.P1)
	defer cancel()
	defer r.stopGuard()
	from := r.from[r.t.Src]
	for {
		ev, next, err := waitFor(ctx1, r.t.Src, from, 10*r.cfg.Poll, func(e Event) bool {
			return e.Name == "STOP" || isMigrationStatus("completed", "failed", "cancelled")(e)
		})
		from = next
		if fired, gev, _, _, gerr := r.guard.result(); fired {
			return Event{}, &Error{Phase: "P1", Err: fmt.Errorf("domain M stopped (%s) while the target migrated; target suspended (%v)", gev.Name, gerr), Outcome: r.rollbackDomMFirst(ctx)}
		}
		switch {
		case errors.Is(err, errPoll):
			continue
		case err != nil:
			return Event{}, &Error{Phase: "P1", Err: fmt.Errorf("waiting for the target to stop: %w", err), Outcome: r.abort(ctx)}
		case ev.Name == "STOP", ev.Status == "completed":
			return ev, nil
		default:
			return Event{}, &Error{Phase: "P1", Err: fmt.Errorf("target migration %s: %s", ev.Status, r.progressErr(ctx, r.t.Src)), Outcome: r.abort(ctx)}
		}
	}
}

// seqTargetCopied waits for the target's migration to end after prepare. If it failed,
// the hypervisor restarts the target at the source (QEMU and xl both do) while Domain M
// is quiesced: it is stopped, Domain M resumed there, and it is restarted; the timeline
// shows the unwatched interval.
func (r *run) seqTargetCopied(ctx context.Context) error {
	ctx2, cancel := context.WithTimeout(ctx, r.cfg.P2)
	defer cancel()
	ev, _, err := r.t.Src.WaitEvent(ctx2, r.from[r.t.Src], isMigrationStatus("completed", "failed", "cancelled"))
	if err == nil && ev.Status == "completed" {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("target migration %s: %s", ev.Status, r.progressErr(ctx, r.t.Src))
	}
	return &Error{Phase: "P2", Err: fmt.Errorf("target's last copy: %w", err), Outcome: r.recoverTargetRestart(ctx)}
}

// seqFailPrepare: the target stopped for its last copy, and the supervisor did not
// quiesce. The copy cannot be held back: if it arrives, the target stays paused at the
// destination; if it fails, the target is restarted at the source once the supervisor
// monitors there.
func (r *run) seqFailPrepare(ctx context.Context, perr error) error {
	err := fmt.Errorf("supervisor prepare: %w", perr)
	ctx2, cancel := context.WithTimeout(ctx, r.cfg.P2)
	ev, _, werr := r.t.Src.WaitEvent(ctx2, r.from[r.t.Src], isMigrationStatus("completed", "failed", "cancelled"))
	cancel()
	if werr == nil && ev.Status == "completed" {
		return &Error{Phase: "P1", Err: err, Outcome: "target paused at destination (arrived); domain M at the source, not told to resume"}
	}
	c, cancel := r.short(ctx)
	_, _, rerr := r.t.Src.WaitEvent(c, r.from[r.t.Src], func(e Event) bool { return e.Name == "RESUME" })
	cancel()
	c, cancel = r.short(ctx)
	if rerr == nil {
		r.t.Src.Stop(c)
	} else if up, _ := r.t.Src.Running(c); up {
		r.t.Src.Stop(c)
	}
	cancel()
	if e := r.monitoringAgain(ctx); e != nil {
		return &Error{Phase: "P1", Err: err, Outcome: fmt.Sprintf("target paused at source: supervisor not monitoring (%v)", e)}
	}
	c, cancel = r.short(ctx)
	defer cancel()
	if e := r.t.Src.Cont(c); e != nil {
		return &Error{Phase: "P1", Err: err, Outcome: fmt.Sprintf("target paused at source: %v", e)}
	}
	return &Error{Phase: "P1", Err: err, Outcome: outcomeRolledBack}
}

// seqRollback: the target has arrived (paused) and Domain M cannot be made to monitor
// it at the destination. Where the target's source is kept after a completed migration
// (QEMU), the pair is resumed at the source as in Sync; where it is gone (xl destroys
// it), the target stays paused at the destination.
func (r *run) seqRollback(ctx context.Context) string {
	c, cancel := r.short(ctx)
	_, err := r.t.Src.Running(c)
	cancel()
	if err != nil {
		return fmt.Sprintf("target paused at destination (its source is gone: %v)", err)
	}
	return r.rollbackFromDestination(ctx)
}
