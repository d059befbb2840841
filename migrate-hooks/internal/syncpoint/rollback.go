package syncpoint

import (
	"context"
	"fmt"
	"time"
)

// Rollback paths. Each returns the outcome for the operator. The rule in all of them:
// the target is restarted at the source only after Domain M runs there and the
// supervisor has answered resume; if that cannot be had, the target stays paused.

// abort cancels both outgoing migrations before the target has stopped for good: the
// supervisor was never prepared, so the pair goes on running at the source. The target
// is suspended first and restarted last, once Domain M runs: cancelling Domain M's
// migration can take long (libvirt's abort waits for its Perform3 to end; 0.9 s at
// load 27) and Domain M may stop meanwhile (it converged, or completed before the abort
// reached it, and is resumed only by Confirm3 cancelled); a target left running then
// ran unwatched (TestCoMigrateLibvirt/destination_dies, an 894 ms gap).
//
// The target's migration is cancelled next, and the target stopped again: its hypervisor
// may restart it on the way (QEMU restarts a source cancelled at pre-switchover; libvirt
// resumes a source whose Perform3 failed, when its cleanup ends, or whose Perform3 it
// confirms cancelled), and only then is Domain M's migration cancelled.
func (r *run) abort(ctx context.Context) string {
	// Up to two cancels that each wait for libvirt's Perform3 to end, then restarts: a
	// budget of three short calls, not one.
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*r.cfg.Call)
	defer cancel()
	r.t.Src.Stop(c)
	r.t.Src.CancelMigration(c)
	r.t.Src.Stop(c)
	r.m.Src.CancelMigration(c)
	if up, _ := r.m.Src.Running(c); !up {
		// Domain M stopped (converged, or completed: its destination copy is paused):
		// it is restarted at the source, as in rollbackDomMFirst.
		r.m.Dst.Stop(c)
		r.m.Src.Cont(c)
	}
	if err := waitRunning(c, r.m.Src); err != nil {
		// Domain M does not run: the target stays suspended.
		return fmt.Sprintf("target held at source: domain M is not running there (%v)", err)
	}
	r.stopGuard()
	if up, _ := r.t.Src.Running(c); !up {
		if err := r.t.Src.Cont(c); err != nil {
			return fmt.Sprintf("target paused at source: %v", err)
		}
	}
	if err := waitRunning(c, r.t.Src); err != nil {
		return fmt.Sprintf("target at source not running after cancel: %v", err)
	}
	return outcomeRolledBack
}

// rollbackDomMFirst: Domain M stopped (and may have migrated) before the target, which
// the coordinator then stopped. Domain M is restarted at the source (its destination copy
// stopped), the supervisor, never prepared, must still monitor there; then the target's
// migration is cancelled and the target restarted.
func (r *run) rollbackDomMFirst(ctx context.Context) string {
	c, cancel := r.short(ctx)
	defer cancel()
	r.m.Dst.Stop(c)
	r.m.Src.CancelMigration(c)
	if up, _ := r.m.Src.Running(c); !up {
		if err := r.m.Src.Cont(c); err != nil {
			return fmt.Sprintf("target paused at source, domain M paused: %v", err)
		}
	}
	if err := waitRunning(c, r.m.Src); err != nil {
		return fmt.Sprintf("target paused at source: %v", err)
	}
	if err := r.monitoringAgain(ctx); err != nil {
		return fmt.Sprintf("target paused at source: supervisor not monitoring (%v)", err)
	}
	r.stopGuard()
	r.t.Src.CancelMigration(c)
	if up, _ := r.t.Src.Running(c); !up {
		if err := r.t.Src.Cont(c); err != nil {
			return fmt.Sprintf("target paused at source: %v", err)
		}
	}
	return outcomeRolledBack
}

// failPrepare: the target is held stopped at pre-switchover, the supervisor did not
// quiesce. Domain M's migration is cancelled; if the supervisor answers resume at the
// source the target is released there, else it stays held.
func (r *run) failPrepare(ctx context.Context, err error) error {
	c, cancel := r.short(ctx)
	defer cancel()
	r.m.Src.CancelMigration(c)
	if up, e := r.m.Src.Running(c); e != nil || !up {
		return &Error{Phase: "P1", Err: fmt.Errorf("supervisor prepare: %w", err), Outcome: "target paused at source (pre-switchover): domain M not running"}
	}
	if e := r.monitoringAgain(ctx); e != nil {
		return &Error{Phase: "P1", Err: fmt.Errorf("supervisor prepare: %w", err),
			Outcome: fmt.Sprintf("target paused at source (pre-switchover): supervisor not monitoring (%v)", e)}
	}
	r.t.Src.CancelMigration(c)
	if e := waitRunning(c, r.t.Src); e != nil {
		return &Error{Phase: "P1", Err: err, Outcome: fmt.Sprintf("target at source not running after cancel: %v", e)}
	}
	return &Error{Phase: "P1", Err: fmt.Errorf("supervisor prepare: %w", err), Outcome: outcomeRolledBack}
}

// monitoringAgain makes sure the supervisor monitors the target at the source: it may
// never have quiesced (then it says so when asked), else it is resumed there.
func (r *run) monitoringAgain(ctx context.Context) error {
	c, cancel := context.WithTimeout(ctx, r.cfg.Handshake)
	defer cancel()
	if ok, err := r.sup.Monitoring(c); err == nil && ok {
		r.supChange = append(r.supChange, Change{time.Now(), SubjectSupervisor, "supervisor", true, "status: monitoring"})
		return nil
	}
	return r.resume(ctx, true)
}

// rollbackDomMAtSource: Domain M's migration failed or is cancelled while the target is
// held. QEMU restarts a source whose migration fails; make sure Domain M runs, let the
// supervisor resume at the source, then release the target there.
func (r *run) rollbackDomMAtSource(ctx context.Context) string {
	c, cancel := r.short(ctx)
	defer cancel()
	r.m.Src.CancelMigration(c)
	if err := waitRunning(c, r.m.Src); err != nil {
		if err := r.m.Src.Cont(c); err != nil {
			return fmt.Sprintf("target paused at source (pre-switchover): domain M does not run there: %v", err)
		}
	}
	return r.releaseTargetAtSource(ctx)
}

// rollbackAfterDomM: Domain M has migrated, the target is held at the source and cannot
// follow. Domain M is restarted at the source (its destination copy stays paused).
func (r *run) rollbackAfterDomM(ctx context.Context) string {
	c, cancel := r.short(ctx)
	defer cancel()
	r.m.Dst.Stop(c)
	if err := r.m.Src.Cont(c); err != nil {
		return fmt.Sprintf("target paused at source (pre-switchover), domain M paused at both ends: %v", err)
	}
	return r.releaseTargetAtSource(ctx)
}

func (r *run) releaseTargetAtSource(ctx context.Context) string {
	if err := r.resume(ctx, true); err != nil {
		return fmt.Sprintf("target paused at source (pre-switchover): supervisor resume at source: %v", err)
	}
	c, cancel := r.short(ctx)
	defer cancel()
	r.t.Src.CancelMigration(c)
	if err := waitRunning(c, r.t.Src); err != nil {
		return fmt.Sprintf("target at source not running after cancel: %v", err)
	}
	return outcomeRolledBack
}

// recoverTargetRestart: the target's final copy failed after it was released from
// pre-switchover. QEMU 7.2 then restarts it at the source by itself while Domain M has
// already left: stop it at once, bring Domain M and the supervisor back at the source,
// restart it. The unwatched interval shows in the timeline.
//
// The restart is seen by its RESUME event, not by polling the state (every 10 ms, a
// call each, behind the coordinator's other calls on a loaded host).
func (r *run) recoverTargetRestart(ctx context.Context) string {
	c, cancel := r.short(ctx)
	_, _, err := r.t.Src.WaitEvent(c, r.from[r.t.Src], func(e Event) bool { return e.Name == "RESUME" })
	cancel()
	c, cancel = r.short(ctx)
	if err == nil {
		r.t.Src.Stop(c)
	} else if up, _ := r.t.Src.Running(c); up {
		r.t.Src.Stop(c)
	}
	cancel()
	return r.rollbackAfterDomMStopped(ctx)
}

func (r *run) rollbackAfterDomMStopped(ctx context.Context) string {
	c, cancel := r.short(ctx)
	defer cancel()
	r.m.Dst.Stop(c)
	if err := r.m.Src.Cont(c); err != nil {
		return fmt.Sprintf("target paused at source, domain M paused: %v", err)
	}
	if err := r.resume(ctx, true); err != nil {
		return fmt.Sprintf("target paused at source: supervisor resume at source: %v", err)
	}
	if err := r.t.Src.Cont(c); err != nil {
		return fmt.Sprintf("target paused at source: %v", err)
	}
	return outcomeRolledBack
}

// rollbackFromDestination: both VMs arrived but the destination side cannot be made to
// monitor. Both sources are paused after a completed migration; they can be restarted.
func (r *run) rollbackFromDestination(ctx context.Context) string {
	out := r.rollbackAfterDomMStopped(ctx)
	if out != outcomeRolledBack {
		return "target paused at destination and source: " + out
	}
	return out
}

// waitRunning waits until vm reports running (QEMU restarts a source asynchronously).
func waitRunning(ctx context.Context, vm VM) error {
	for {
		up, err := vm.Running(ctx)
		if err != nil {
			return err
		}
		if up {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not running: %w", vm.Where(), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
