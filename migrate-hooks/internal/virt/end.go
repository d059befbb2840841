package virt

import (
	"context"
	"fmt"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// end is one end of a Migration as a syncpoint.VM.
type end struct {
	m   *Migration
	h   *Host
	dst bool
}

var (
	_ syncpoint.VM        = (*end)(nil)
	_ syncpoint.Committer = (*end)(nil)
	_ syncpoint.Preparer  = (*end)(nil)
)

func (e *end) Where() string { return e.m.where(e.h) }

// SetCapabilities: libvirt sets QEMU's capabilities itself (events,
// pause-before-switchover); only x-ignore-shared is ours, applied by Migrate.
func (e *end) SetCapabilities(ctx context.Context, caps map[string]bool) error {
	if !e.dst {
		e.m.mu.Lock()
		e.m.ignoreShared = caps["x-ignore-shared"]
		e.m.mu.Unlock()
	}
	return nil
}

// SetParameters: max speed in whole MiB/s (rounded up, at least 1: libvirt's unit), max
// downtime in ms. Both work before and during the job.
func (e *end) SetParameters(ctx context.Context, p syncpoint.Params) error {
	if e.dst {
		return nil
	}
	d, err := e.h.domain(e.m.Name)
	if err != nil {
		return err
	}
	if p.MaxBandwidth != 0 {
		mib := uint64(max((p.MaxBandwidth+1<<20-1)>>20, 1))
		if err := e.h.lv.DomainMigrateSetMaxSpeed(d, mib, 0); err != nil {
			return fmt.Errorf("%s: max speed %d MiB/s: %w", e.Where(), mib, err)
		}
		e.m.mu.Lock()
		e.m.speedMiB = mib
		e.m.mu.Unlock()
	}
	if p.DowntimeLimit != 0 {
		ms := uint64(max(p.DowntimeLimit.Milliseconds(), 1))
		e.m.mu.Lock()
		e.m.downtimeMs = ms
		e.m.mu.Unlock()
		if err := e.h.lv.DomainMigrateSetMaxDowntime(d, ms, 0); err != nil {
			return fmt.Errorf("%s: max downtime %d ms: %w", e.Where(), ms, err)
		}
	}
	return nil
}

// Migrate starts the migration; uri is what the destination listens on.
// Prepare runs Begin3 and Prepare3 (syncpoint.Preparer): starting the destination QEMU
// takes long, so the coordinator prepares both VMs before either stream starts.
func (e *end) Prepare(ctx context.Context, uri string) error { return e.m.prepare(ctx, uri) }

// Migrate starts Perform3 (preparing first if that was not done).
func (e *end) Migrate(ctx context.Context, uri string) error {
	e.m.mu.Lock()
	ph := e.m.phase
	e.m.mu.Unlock()
	if ph == idle {
		if err := e.m.prepare(ctx, uri); err != nil {
			return err
		}
	}
	if err := e.m.launch(); err != nil {
		return err
	}
	return e.m.jobStarted(ctx)
}

// Progress: the status is QEMU's last MIGRATION event at the source (failed/cancelled
// when Perform3 failed); sizes from virDomainGetJobStats while the job runs.
func (e *end) Progress(ctx context.Context) (syncpoint.Progress, error) {
	m := e.m
	m.mu.Lock()
	ph, perr, dom, from := m.phase, m.performErr, m.srcDom, m.from
	m.mu.Unlock()
	p := syncpoint.Progress{Status: "none"}
	evs, _ := m.Src.eventLog(m.Name).snapshot()
	for _, ev := range evs[min(from, len(evs)):] {
		if ev.Name == "MIGRATION" && ev.Status != "" {
			p.Status = ev.Status
		}
	}
	switch ph {
	case idle, prepared:
		return p, nil
	case failed:
		if p.Status != "cancelled" {
			p.Status = "failed"
		}
		p.Error = fmt.Sprint(perr)
		return p, nil
	case performing:
		typ, params, err := m.Src.lv.DomainGetJobStats(dom, 0)
		if err != nil {
			return p, fmt.Errorf("%s: job stats: %w", e.Where(), err)
		}
		if typ == int32(golibvirt.DomainJobNone) {
			return p, nil
		}
		for _, tp := range params {
			v, _ := tp.Value.I.(uint64)
			switch tp.Field {
			case "memory_total":
				p.Total = int64(v)
			case "memory_remaining":
				p.Remaining = int64(v)
			case "time_elapsed":
				p.TotalTime = time.Duration(v) * time.Millisecond
			case "downtime":
				p.Downtime = time.Duration(v) * time.Millisecond
			}
		}
		m.mu.Lock()
		m.streamTotal = max(m.streamTotal, p.Total)
		m.mu.Unlock()
	}
	return p, nil
}

// ContinueSwitchover: libvirt has already released the final copy (it answers QEMU's
// pre-switchover itself); the target stays stopped at the source until Confirm3 and
// paused at the destination until Cont, which is what P2 asks.
func (e *end) ContinueSwitchover(ctx context.Context) error { return nil }

// CancelMigration aborts a running Perform3 (libvirt then resumes the source and the
// destination is destroyed by Finish3 cancelled) or cancels a performed one (Confirm3
// cancelled resumes the source; the destination copy is destroyed).
func (e *end) CancelMigration(ctx context.Context) error {
	m := e.m
	m.mu.Lock()
	ph, dom := m.phase, m.srcDom
	m.mu.Unlock()
	switch ph {
	case prepared:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.unprepare()
	case performing:
		// Perform3 runs in the background: its job may not have started yet when the
		// abort arrives ("no job is active"); retry until it has, or has ended.
		for {
			err := m.Src.lv.DomainAbortJob(dom)
			if err == nil || m.wait(ctx) == nil || ctx.Err() != nil {
				break
			}
			m.Src.log.Debug("abort job", "where", e.Where(), "err", err)
			sleepCtx(ctx, 10*time.Millisecond)
		}
		if err := m.wait(ctx); err != nil {
			return err
		}
		// Perform3 may have succeeded before the abort reached it.
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.phase == performed {
			return m.cancelPerformed()
		}
		return nil
	case performed:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.cancelPerformed()
	}
	return nil
}

// Cont resumes this end. At the source, a performed migration is cancelled first
// (Confirm3 cancelled resumes it); at the destination, Finish3 must have returned.
func (e *end) Cont(ctx context.Context) error {
	m := e.m
	if e.dst {
		t0 := time.Now()
		if err := m.wait(ctx); err != nil {
			return err
		}
		m.mu.Lock()
		ferr, perr, dom := m.finishErr, m.performErr, m.dstDom
		m.mu.Unlock()
		if perr != nil {
			return perr
		}
		if ferr != nil {
			return ferr
		}
		t1 := time.Now()
		if err := m.Dst.lv.DomainResume(dom); err != nil {
			return fmt.Errorf("%s: resume: %w", e.Where(), err)
		}
		m.Dst.log.Info("resumed", "where", e.Where(), "waited_finish3", t1.Sub(t0), "took", time.Since(t1), "at", stamp(time.Now()))
		return nil
	}
	m.mu.Lock()
	if m.phase == performed {
		err := m.cancelPerformed()
		m.mu.Unlock()
		return err
	}
	m.mu.Unlock()
	if up, err := e.Running(ctx); err != nil || up {
		return err
	}
	d, err := e.h.domain(m.Name)
	if err != nil {
		return err
	}
	if err := e.h.lv.DomainResume(d); err != nil {
		return fmt.Errorf("%s: resume: %w", e.Where(), err)
	}
	return nil
}

// Stop suspends this end in one call where it can: the P1 guard and the rollbacks stop
// the target with it first thing, so it neither asks first (libvirt's suspend of a
// paused domain does nothing and succeeds) nor looks the source up again (its handle
// from Begin3). Three calls in series took that much longer on a loaded host.
func (e *end) Stop(ctx context.Context) error {
	var d golibvirt.Domain
	if p := e.m.srcHandle.Load(); p != nil && !e.dst {
		d = *p
	} else {
		var err error
		if d, err = e.h.domain(e.m.Name); err != nil {
			return err
		}
	}
	if err := e.h.lv.DomainSuspend(d); err != nil {
		return fmt.Errorf("%s: suspend: %w", e.Where(), err)
	}
	return nil
}

// Running: a destination that was never prepared is not running (and not an error); one
// that was prepared and is gone is an error.
func (e *end) Running(ctx context.Context) (bool, error) {
	if e.dst {
		e.m.mu.Lock()
		prepared := e.m.performed != nil
		e.m.mu.Unlock()
		if !prepared {
			return false, nil
		}
	}
	d, err := e.h.domain(e.m.Name)
	if err != nil {
		return false, err
	}
	st, _, err := e.h.lv.DomainGetState(d, 0)
	if err != nil {
		return false, fmt.Errorf("%s: state: %w", e.Where(), err)
	}
	return golibvirt.DomainState(st) == golibvirt.DomainRunning, nil
}

func (e *end) WaitEvent(ctx context.Context, from int, match func(syncpoint.Event) bool) (syncpoint.Event, int, error) {
	l := e.h.eventLog(e.m.Name)
	for {
		evs, changed := l.snapshot()
		for i := from; i < len(evs); i++ {
			if match(evs[i]) {
				return evs[i], i + 1, nil
			}
		}
		from = max(from, len(evs))
		select {
		case <-changed:
		case <-ctx.Done():
			return syncpoint.Event{}, from, ctx.Err()
		}
	}
}

func (e *end) Events() []syncpoint.Event {
	evs, _ := e.h.eventLog(e.m.Name).snapshot()
	return evs
}

// Commit confirms the migration at the source (Confirm3): the paused source ends.
func (e *end) Commit(ctx context.Context) error {
	if e.dst {
		return nil
	}
	return e.m.commit(ctx)
}
