package supervisor

import (
	"context"
	"encoding/json"
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

	reported map[string]bool // changes alerted and still present

	mu      sync.Mutex
	running bool
	started time.Time
	checks  int
	last    time.Time
	failing bool
}

type checkOutcome struct {
	rep     DiskReport
	err     error
	started time.Time
}

func newDiskLoop(s *Supervisor, c DiskChecker) *diskLoop {
	d := &diskLoop{s: s, check: c, probe: make(chan chan bool), reported: map[string]bool{}}
	s.restoreDisk(d.reported)
	return d
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
				rep, err := d.check.Check(cctx, d.s.rules.cur.Load().rules)
				out <- checkOutcome{rep: rep, err: err, started: started}
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
	if o.rep.BaselineCreated {
		d.s.emit(alert.Health(now, alert.SevInfo, "disk", "baseline-created",
			fmt.Sprintf("no file-integrity baseline for %s: recorded one with %d entries in %s", d.s.cfg.Target.Disk, o.rep.Entries, d.s.cfg.Target.Baseline)))
	}
	t := d.s.currentTarget()
	t.Source = d.s.cfg.Target.Disk
	seen := map[string]bool{}
	var evs []alert.Event
	for _, f := range o.rep.Findings {
		k := changeKey(f)
		seen[k] = true
		if d.reported[k] {
			continue
		}
		d.reported[k] = true
		f.Target = t
		evs = append(evs, alert.FromFinding(f, ""))
	}
	d.s.emitAll(evs)
	forgot := 0
	for k := range d.reported {
		if !seen[k] {
			delete(d.reported, k) // reverted or taken into the baseline: alert again if it recurs
			forgot++
		}
	}
	if len(evs) > 0 || forgot > 0 {
		d.s.saveDisk(d.reported)
	}
	d.mu.Lock()
	if d.failing {
		d.s.emit(alert.Health(now, alert.SevInfo, "disk", "recovered", "disk checks work again"))
	}
	d.failing = false
	d.checks++
	d.last = now
	d.s.m.lastCheck.Set(float64(now.UnixNano()) / 1e9)
	d.mu.Unlock()
	d.s.log.Info("disk check", "entries", o.rep.Entries, "changes", len(o.rep.Findings), "new", len(evs), "took", now.Sub(o.started))
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

// changeKey identifies one change with its values, so that a file changed again
// differently is alerted again: the finding's rule, path, metadata and typed change
// (kind, file description, attribute changes), in a canonical JSON form.
func changeKey(f detectors.Finding) string {
	b, err := json.Marshal(struct {
		Meta    map[string]string      `json:"m,omitempty"` // encoding/json sorts map keys
		Change  string                 `json:"c,omitempty"`
		File    *detectors.FileInfo    `json:"f,omitempty"`
		Before  *detectors.FileInfo    `json:"b,omitempty"`
		Changes []detectors.AttrChange `json:"a,omitempty"`
	}{f.Meta, f.Change, f.File, f.Before, f.Changes})
	if err != nil { // cannot happen: only strings, numbers and times
		b = []byte(err.Error())
	}
	return f.Rule + "\x00" + f.Path + "\x00" + string(b)
}
