package syncpoint

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Result describes one co-migration. Durations between hypervisor events use the
// hypervisors' own timestamps. A figure the migration did not get far enough to measure
// is absent (null in JSON, "n/a" in text), not 0.
type Result struct {
	Mode  Mode      `json:"mode"`
	Start time.Time `json:"start"`
	// Total is from the start of both migrations until both VMs run at the destination.
	Total Figure `json:"total_ns"`
	// Waits at P1..P4. P1: Domain M held (could have finished, target still running).
	// P2: target stopped at pre-switchover until released. P3: Domain M arrived, target
	// not yet. P4: target arrived until it runs. Absent in NoSync mode (no sync points).
	Waits [4]Figure `json:"waits_ns"`
	// TargetDowntime: target STOP at the source → RESUME at the destination.
	TargetDowntime Figure `json:"target_downtime_ns"`
	// SyncWait is the part of TargetDowntime the target spent waiting: P2 and P4 (at P3
	// Domain M waits, while the target is still arriving).
	SyncWait     Figure `json:"sync_wait_ns"`
	DomMDowntime Figure `json:"domm_downtime_ns"`
	// P1Margin is Domain M's STOP minus the target's STOP at the source: positive when
	// Domain M stopped after the target, as P1 requires.
	P1Margin Figure `json:"p1_margin_ns"`
	// P1Detect is how long after the target's STOP the coordinator acted on it.
	P1Detect Figure `json:"p1_detect_ns"`
	// GuardDetect and GuardPause: Domain M stopped during P1 (the P1 guard fired) — its
	// STOP event → the coordinator saw it → the target's Stop returned. Absent when
	// Domain M did not stop during P1.
	GuardDetect Figure `json:"guard_detect_ns"`
	GuardPause  Figure `json:"guard_pause_ns"`
	// Gap is the time the target ran unwatched according to Timeline, counted up to the
	// end of observation for a violation still open then (must be 0, with no
	// violations); absent when nothing was observed.
	Gap        Figure      `json:"gap_ns"`
	Violations []Violation `json:"violations,omitempty"`
	Held       bool        `json:"held"`
	RolledBack bool        `json:"rolled_back"`
	Timeline   Timeline    `json:"timeline"`
}

// Error is a failed co-migration: what failed, and where the pair was left.
type Error struct {
	Phase string // "P1".."P4", "setup"
	Err   error
	// Outcome: "rolled back to source", "paused at source", "paused at destination", ...
	Outcome string
}

func (e *Error) Error() string {
	return fmt.Sprintf("co-migration failed at %s: %v; %s", e.Phase, e.Err, e.Outcome)
}
func (e *Error) Unwrap() error { return e.Err }

// ErrUnwatched is matched when a failure left the target running unwatched for a while
// (QEMU 7.2 restarts a source whose final stop-and-copy failed; see README).
var ErrUnwatched = errors.New("target ran unwatched")

// run is the state of one co-migration.
type run struct {
	cfg       Config
	t, m      Side
	sup       Supervisor
	res       Result
	supChange Timeline
	lastDone  int64 // RAM bytes both streams had covered at the last retune
	// from is each process's event count at the start: a VM that migrated before (the
	// benchmark migrates pairs back and forth) has older MIGRATION events to ignore.
	from map[VM]int
	// guard suspends the target if Domain M stops during P1 (guard.go).
	guard *guard
}

// Run co-migrates target t and Domain M m. sup may be nil only in NoSync mode. The
// returned Result is filled as far as the migration got, also on error.
func Run(ctx context.Context, t, m Side, sup Supervisor, cfg Config) (*Result, error) {
	cfg.defaults()
	r := &run{cfg: cfg, t: t, m: m, sup: sup}
	r.res.Mode = cfg.Mode
	if sup == nil && cfg.Mode != NoSync {
		return &r.res, &Error{Phase: "setup", Err: errors.New("no supervisor"), Outcome: "nothing started"}
	}
	t0 := time.Now()
	r.res.Start = t0
	init, err := r.initial(ctx)
	if err != nil {
		return &r.res, &Error{Phase: "setup", Err: err, Outcome: "nothing started"}
	}
	switch cfg.Mode {
	case NoSync:
		err = r.nosync(ctx)
	case Sequential:
		err = r.sequential(ctx)
	default:
		err = r.sync(ctx)
	}
	if err == nil {
		r.commit(ctx)
	}
	r.finish(t0, init)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			r.res.RolledBack = e.Outcome == outcomeRolledBack
		}
		if gap, _ := r.res.Gap.Get(); gap > 0 || len(r.res.Violations) > 0 {
			err = fmt.Errorf("%w (%w for %v)", err, ErrUnwatched, r.res.Gap)
		}
	} else if len(r.res.Violations) > 0 && cfg.Mode != NoSync {
		// Every step succeeded, yet the record shows the target unwatched (NoSync makes
		// no such promise: its gap is the baseline's measurement).
		err = fmt.Errorf("co-migration completed, but %w: %w", ErrUnwatched, r.res.Timeline.Err())
	}
	if err != nil {
		r.cfg.Log.Error("co-migration failed", "err", err)
		if r.cfg.Alert != nil {
			r.cfg.Alert(err)
		}
	}
	return &r.res, err
}

const outcomeRolledBack = "rolled back to source: target and Domain M run there, supervisor monitoring"

// initial records whether each process runs before anything starts.
func (r *run) initial(ctx context.Context) (map[VM]bool, error) {
	init := map[VM]bool{}
	r.from = map[VM]int{}
	for _, vm := range []VM{r.t.Src, r.t.Dst, r.m.Src, r.m.Dst} {
		r.from[vm] = len(vm.Events())
		up, err := vm.Running(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", vm.Where(), err)
		}
		init[vm] = up
	}
	if !init[r.t.Src] || !init[r.m.Src] {
		return nil, fmt.Errorf("both VMs must run at the source (target %v, domain M %v)", init[r.t.Src], init[r.m.Src])
	}
	return init, nil
}

// finish builds the timeline and the figures that come from it.
func (r *run) finish(t0 time.Time, init map[VM]bool) {
	tl := Timeline{}
	tl = append(tl, lifecycle(SubjectTarget, r.t.Src, t0, init[r.t.Src])...)
	tl = append(tl, lifecycle(SubjectTarget, r.t.Dst, t0, init[r.t.Dst])...)
	tl = append(tl, lifecycle(SubjectDomM, r.m.Src, t0, init[r.m.Src])...)
	tl = append(tl, lifecycle(SubjectDomM, r.m.Dst, t0, init[r.m.Dst])...)
	if r.cfg.Mode == NoSync {
		// No handshake: the supervisor is taken as monitoring whenever Domain M runs.
		tl = append(tl, Change{t0, SubjectSupervisor, "supervisor", true, "not involved"})
	} else {
		tl = append(tl, Change{t0, SubjectSupervisor, "supervisor", true, "initial"})
		tl = append(tl, r.supChange...)
	}
	tl = append(tl, Change{time.Now(), SubjectEnd, "coordinator", false, "end of observation"})
	r.res.Timeline = tl
	var gap time.Duration
	r.res.Violations, gap = tl.Check()
	r.res.Gap = Measured(gap)

	tStop, okT := firstAfter(r.t.Src, t0, "STOP")
	tRun, okR := firstAfter(r.t.Dst, t0, "RESUME")
	if okT && okR {
		r.res.TargetDowntime = Measured(tRun.Sub(tStop))
	}
	mStop, okM := firstAfter(r.m.Src, t0, "STOP")
	mRun, okMR := firstAfter(r.m.Dst, t0, "RESUME")
	if okM && okMR {
		r.res.DomMDowntime = Measured(mRun.Sub(mStop))
	}
	if okT && okM {
		r.res.P1Margin = Measured(mStop.Sub(tStop))
	}
	if okR && okMR {
		end := tRun
		if mRun.After(end) {
			end = mRun
		}
		r.res.Total = Measured(end.Sub(t0))
	}
	r.res.SyncWait = r.res.Waits[1].Add(r.res.Waits[3])
}

func firstAfter(vm VM, t0 time.Time, name string) (time.Time, bool) {
	for _, e := range vm.Events() {
		if e.Name == name && !e.Time.Before(t0) {
			return e.Time, true
		}
	}
	return time.Time{}, false
}

// prepareBoth prepares the target, then Domain M, where the driver has such a step
// (Preparer); the target first, since Domain M's destination may need the target's.
func (r *run) prepareBoth(ctx context.Context) error {
	for _, s := range []Side{r.t, r.m} {
		if p, ok := s.Src.(Preparer); ok {
			if err := p.Prepare(ctx, s.URI); err != nil {
				return err
			}
		}
	}
	return nil
}

// commit tells each source that keeps its VM until then (Committer) that the migration
// is final. The pair already runs at the destination: a failure only leaves a paused
// source behind, which is logged.
func (r *run) commit(ctx context.Context) {
	for _, vm := range []VM{r.t.Src, r.m.Src} {
		if c, ok := vm.(Committer); ok {
			cc, cancel := r.short(ctx)
			if err := c.Commit(cc); err != nil {
				r.cfg.Log.Warn("source not released after migration", "where", vm.Where(), "err", err)
			}
			cancel()
		}
	}
}

// supervisor records the supervisor's state conservatively: not monitoring from the
// moment prepare is sent, monitoring from the moment resume is answered.
func (r *run) prepare(ctx context.Context) error {
	r.supChange = append(r.supChange, Change{time.Now(), SubjectSupervisor, "supervisor", false, "prepare sent"})
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Handshake)
	defer cancel()
	err := r.sup.Prepare(ctx)
	if err != nil {
		// A refusal says why (e.g. "expired", "stale": the supervisor did nothing).
		r.cfg.Log.Warn("supervisor prepare failed", "err", err)
	}
	return err
}

func (r *run) resume(ctx context.Context, atSource bool) error {
	budget := r.cfg.Handshake
	if atSource {
		// The rollback may take three calls (resume refused, prepare, resume): each gets
		// a handshake's time. With one for all, a supervisor slowed by load (CI at
		// 421d419) got its second prepare with 922 ms left and refused it as expired,
		// leaving the target paused for the operator.
		budget *= 3
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var err error
	what := "resume answered (destination)"
	if atSource {
		err = r.sup.ResumeAtSource(ctx)
		what = "resume answered (source)"
	} else {
		err = r.sup.Resume(ctx)
	}
	if err == nil {
		r.supChange = append(r.supChange, Change{time.Now(), SubjectSupervisor, "supervisor", true, what})
	} else {
		r.cfg.Log.Warn("supervisor resume failed", "at_source", atSource, "err", err)
	}
	return err
}

// short bounds a single hypervisor call made while cleaning up or checking (Config.Call).
func (r *run) short(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Call)
}

func isMigrationStatus(statuses ...string) func(Event) bool {
	return func(e Event) bool {
		if e.Name != "MIGRATION" {
			return false
		}
		for _, s := range statuses {
			if e.Status == s {
				return true
			}
		}
		return false
	}
}

// stopped reports an outgoing migration whose VM has stopped for its final copy.
func stopped(status string) bool {
	return status == "pre-switchover" || status == "device" || status == "completed"
}

func terminal(status string) bool {
	return status == "failed" || status == "cancelled" || status == "cancelling"
}
