package supervisor

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/alert"
	"github.com/domainm/domainm/detectors"
)

// diskLoop runs disk checks on their schedule, one at a time.
type diskLoop struct {
	s     *Supervisor
	check DiskChecker
	probe chan chan bool

	mu      sync.Mutex
	running bool
	started time.Time
	checks  int
	last    time.Time
	failing bool
}

type checkOutcome struct {
	fs      []detectors.Finding
	err     error
	started time.Time
}

func newDiskLoop(s *Supervisor, c DiskChecker) *diskLoop {
	return &diskLoop{s: s, check: c, probe: make(chan chan bool)}
}

func (d *diskLoop) run(ctx context.Context) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done chan checkOutcome
	next := d.s.clk.Now()
	for {
		var timer <-chan time.Time
		if done == nil {
			timer = d.s.clk.After(max(0, next.Sub(d.s.clk.Now())))
		}
		select {
		case <-ctx.Done():
			if done != nil {
				<-done // the checker honours ctx
			}
			return
		case <-timer:
			done = make(chan checkOutcome, 1)
			started := d.s.clk.Now()
			d.set(true, started)
			d.s.status("disk check of %s", d.s.cfg.Target.Disk)
			go func(out chan<- checkOutcome) {
				fs, err := d.check.Check(cctx)
				out <- checkOutcome{fs: fs, err: err, started: started}
			}(done)
		case o := <-done:
			done = nil
			d.set(false, time.Time{})
			d.handle(o)
			next = o.started.Add(d.s.cfg.Disk.Interval)
		case p := <-d.probe:
			p <- d.healthy()
		}
	}
}

func (d *diskLoop) handle(o checkOutcome) {
	now := d.s.clk.Now()
	if o.err != nil {
		d.s.m.diskChecks.WithLabelValues("failed").Inc()
		d.s.log.Error("disk check failed", "err", o.err)
		if !d.failing {
			d.s.emit(alert.Health(now, alert.SevHigh, "disk", "check-failed",
				fmt.Sprintf("disk check of %s failed: %v", d.s.cfg.Target.Disk, o.err)))
		}
		d.mu.Lock()
		d.failing = true
		d.mu.Unlock()
		return
	}
	d.s.m.diskChecks.WithLabelValues("ok").Inc()
	t := d.s.currentTarget()
	for _, f := range o.fs {
		f.Target = t
		f.Target.Source = d.s.cfg.Target.Disk
		d.s.emit(alert.FromFinding(f, ""))
	}
	d.mu.Lock()
	if d.failing {
		d.s.emit(alert.Health(now, alert.SevInfo, "disk", "recovered", "disk checks work again"))
	}
	d.failing = false
	d.checks++
	d.last = now
	d.mu.Unlock()
	d.s.log.Info("disk check", "changes", len(o.fs), "took", now.Sub(o.started))
}

func (d *diskLoop) set(r bool, t time.Time) {
	d.mu.Lock()
	d.running, d.started = r, t
	d.mu.Unlock()
}

// healthy is false when a check has run for longer than its interval plus the stall
// timeout: the next one is overdue and something is stuck (a hung NFS mount, say).
func (d *diskLoop) healthy() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.running || d.s.clk.Now().Sub(d.started) < d.s.cfg.Disk.Interval+d.s.cfg.Memory.StallTimeout
}
