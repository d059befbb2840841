package supervisor

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/integrity"
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
	// unreachable is the StorageError of the last check once storageConfirm checks in a
	// row failed so, "" while the image can be read (or only storageFails < storageConfirm
	// checks failed).
	unreachable  string
	storageFails int
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
			next = o.started.Add(d.s.diskInterval())
			if d.handle(o) {
				next = d.s.clk.Now().Add(d.storageRetry())
			}
			if d.s.live.diskNow.Swap(false) { // asked for during this check
				next = d.s.clk.Now()
			}
		case <-d.s.live.diskWake: // disk.interval reloaded, or a baseline change accepted
			if done == nil && d.s.live.diskNow.Swap(false) {
				next = d.s.clk.Now()
			} else if done == nil {
				next = replan(next, d.s.clk.Now(), d.s.diskInterval())
			}
		case p := <-d.probe:
			p <- d.healthy()
		}
	}
}

// handle takes a check's outcome; it reports whether the next check should come soon
// (storageRetry) rather than at disk.interval.
func (d *diskLoop) handle(o checkOutcome) (retry bool) {
	now := d.s.clk.Now()
	if o.err != nil {
		d.s.m.diskChecks.WithLabelValues("failed").Inc()
		d.s.log.Error("disk check failed", "err", o.err)
		if storage, retry := d.storageFailed(now, o.err); storage {
			return retry
		}
		if !d.failing {
			d.s.emit(alert.Health(now, alert.SevHigh, "disk", "check-failed",
				fmt.Sprintf("disk check of %s failed: %v", d.s.cfg.Target.Disk, o.err)))
		}
		d.mu.Lock()
		d.failing = true
		d.storageFails = 0 // not in a row with an earlier storage failure
		d.mu.Unlock()
		return false
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
	for _, f := range d.s.suppress(o.rep.Findings, true) {
		k := changeKey(f)
		seen[k] = true
		if d.reported[k] {
			continue
		}
		d.reported[k] = true
		d.s.m.diskChange(f)
		f.Target = t
		evs = append(evs, alert.FromFinding(f, ""))
	}
	d.storageBack(now)
	d.s.emitAll(alert.Aggregate(evs, d.s.aggregateAbove()))
	forgot := 0
	var ended []string
	for k := range d.reported {
		if !seen[k] {
			delete(d.reported, k) // reverted or taken into the baseline: alert again if it recurs
			forgot++
			ended = append(ended, k)
		}
	}
	d.s.emitAll(d.s.endedChanges(ended, o.rep.Findings, now))
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
	return false
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
	return !d.running || d.s.clk.Now().Sub(d.started) < d.s.diskInterval()+d.s.stallTimeout()
}

// changeKey identifies one change with its values, so that a file changed again
// differently is alerted again: rule, path, then name=value pairs sorted by name (the
// rule's meta; for integrity findings the selection, kind, type, an added or removed
// entry's attributes and each changed attribute as "before -> after"). The keys are
// saved in the state folder (disk-reported.json), so this form stays the one earlier
// releases saved, and a restart after an upgrade re-alerts nothing.
func changeKey(f detectors.Finding) string {
	kv := make(map[string]string, len(f.Meta)+16)
	maps.Copy(kv, f.Meta)
	if f.Detector == integrity.Detector {
		kv["selection"], kv["change"], kv["type"] = f.Namespace, f.Change, ""
		if fi := f.File; fi != nil {
			kv["type"] = fi.Type
			if f.Change != string(integrity.Changed) {
				fileValues(kv, fi)
			}
		}
		for _, c := range f.Changes {
			kv[c.Attr] = c.Before + " -> " + c.After
		}
	}
	var b strings.Builder
	b.WriteString(f.Rule + "\x00" + f.Path)
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		b.WriteString("\x00" + k + "=" + kv[k])
	}
	return b.String()
}

// fileValues adds an added or removed entry's attributes to kv, as reports print them.
func fileValues(kv map[string]string, fi *detectors.FileInfo) {
	if fi.Error != "" {
		kv["error"] = fi.Error
	}
	if fi.Mode == nil {
		return // its metadata could not be read
	}
	u := func(p *uint32) string { return strconv.FormatUint(uint64(deref(p)), 10) }
	kv["mode"] = integrity.FormatMode(fi.Type, *fi.Mode)
	kv["uid"], kv["gid"], kv["nlink"] = u(fi.UID), u(fi.GID), u(fi.Nlink)
	kv["size"] = strconv.FormatInt(deref(fi.Size), 10)
	kv["inode"] = strconv.FormatUint(deref(fi.Inode), 10)
	kv["mtime"] = fi.Mtime.UTC().Format(time.RFC3339Nano)
	kv["ctime"] = fi.Ctime.UTC().Format(time.RFC3339Nano)
	if fi.Type == "symlink" {
		kv["link"] = fi.Link
	}
	for k, v := range map[string]string{"caps": fi.Caps, "xattrs": fi.Xattrs, "sha256": fi.SHA256, "sha512": fi.SHA512} {
		if v != "" {
			kv[k] = v
		}
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
