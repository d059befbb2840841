package xenmig

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// domain is one copy of an xl domain (a source here, or a destination at Dest) as the
// coordinator's syncpoint.VM. xl reports no events: the domain's own are observed here
// and stamped on this host's clock, each at the conservative end of what is known —
//
//   - STOP (source): when domainm-xen wait-suspend sees the domain suspended for its
//     last copy; if that is not seen, at xl's successful end (the domain is gone then);
//     after xl pause returned;
//   - RESUME: when xl unpause is sent; for the target, at xl's end when xl migrate
//     failed after the suspend (xl resumes the source before it returns); when Cont
//     finds running a domain whose last event here was a STOP;
//   - MIGRATION active, completed (at xl's end; the destination copy's "completed" is
//     its arrival, paused), failed, or cancelled (xl killed: the domain's state is not
//     known, so nothing is claimed).
//
// xl has no pre-switchover hold and no tunable stream: SetCapabilities, SetParameters
// and ContinueSwitchover do nothing, and Progress reports no byte counts. Only
// syncpoint.Sequential uses it.
type domain struct {
	x     Exec
	host  string // "" here; the destination's name there
	name  string // the xl domain name (the same at both hosts)
	where string // "src/target", ...
	id    int    // the source's domain id (wait-suspend), 0 for a destination
	cfg   *Config
	peer  *domain // a source's destination copy: told of the arrival

	mu      sync.Mutex
	events  []syncpoint.Event
	changed chan struct{} // closed and replaced on each event
	status  string        // the outgoing migration's: "", active, completed, failed, cancelled
	errMsg  string
	cancel  context.CancelFunc
	done    chan struct{}
	started time.Time
	ended   time.Time
	steps   map[string]syncpoint.Figure // the parts of a save, copy and restore move
}

func newDomain(x Exec, host, name, where string, id int, cfg *Config) *domain {
	return &domain{x: x, host: host, name: name, where: where, id: id, cfg: cfg, changed: make(chan struct{})}
}

func (d *domain) post(e syncpoint.Event) {
	d.mu.Lock()
	d.events = append(d.events, e)
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
	d.cfg.Log.Info("event", "where", d.where, "name", e.Name, "status", e.Status, "detail", e.Detail)
}

func (d *domain) Where() string { return d.where }

func (d *domain) SetCapabilities(context.Context, map[string]bool) error { return nil }
func (d *domain) SetParameters(context.Context, syncpoint.Params) error  { return nil }
func (d *domain) ContinueSwitchover(context.Context) error               { return nil }

// Migrate starts xl migrate -p (or, with DomMSave, xl save, scp and xl restore -p) to
// the host named by uri in the background, with wait-suspend beside it.
func (d *domain) Migrate(ctx context.Context, uri string) error {
	if d.host != "" || d.id == 0 {
		return fmt.Errorf("%s: only a source here migrates", d.where)
	}
	d.mu.Lock()
	if d.status == "active" {
		d.mu.Unlock()
		return fmt.Errorf("%s: a migration is under way", d.where)
	}
	mctx, cancel := context.WithCancel(ctx)
	d.status, d.errMsg, d.cancel, d.done, d.started = "active", "", cancel, make(chan struct{}), time.Now()
	d.mu.Unlock()
	d.post(syncpoint.Event{Name: "MIGRATION", Status: "active", Time: d.started})
	go d.migrate(mctx, uri)
	return nil
}

func (d *domain) migrate(ctx context.Context, dest string) {
	defer close(d.done)
	wctx, stopWatch := context.WithCancel(ctx)
	suspended := make(chan bool, 1)
	go func() {
		_, err := d.x.Run(wctx, "", d.cfg.Tool, "wait-suspend", strconv.Itoa(d.id))
		if err == nil {
			d.post(syncpoint.Event{Name: "STOP", Time: time.Now(), Detail: "suspended for its last copy"})
		} else if wctx.Err() == nil {
			d.cfg.Log.Warn("the suspend was not seen: the stop is taken at xl's end", "where", d.where, "err", err)
		}
		suspended <- err == nil
	}()
	var err error
	if d.cfg.DomMSave && d.name == d.cfg.DomM {
		err = d.saveRestore(ctx, dest)
	} else {
		_, err = d.x.Run(ctx, "", "xl", "migrate", "-p", d.name, dest)
	}
	end := time.Now()
	stopWatch()
	sawStop := <-suspended
	d.mu.Lock()
	d.ended = end
	switch {
	case err == nil:
		d.status = "completed"
	case ctx.Err() != nil:
		d.status, d.errMsg = "cancelled", fmt.Sprintf("%v (xl stopped by the coordinator: the domain's state is not known)", err)
	default:
		d.status, d.errMsg = "failed", err.Error()
	}
	status := d.status
	d.mu.Unlock()
	switch status {
	case "completed":
		if !sawStop {
			d.post(syncpoint.Event{Name: "STOP", Time: end, Detail: "gone from this host at xl's end (its suspend was not seen)"})
		}
		d.post(syncpoint.Event{Name: "MIGRATION", Status: "completed", Time: end})
		if d.peer != nil {
			d.peer.post(syncpoint.Event{Name: "MIGRATION", Status: "completed", Time: end, Detail: "arrived paused"})
		}
	case "failed":
		if sawStop && d.name != d.cfg.DomM {
			// xl resumes the source before it returns: from then at the latest the target
			// runs. (Domain M is not taken as running on that ground: Cont finds out.)
			d.post(syncpoint.Event{Name: "RESUME", Time: end, Detail: "resumed here by xl (its migration failed)"})
		}
		d.post(syncpoint.Event{Name: "MIGRATION", Status: "failed", Time: end})
	default:
		d.post(syncpoint.Event{Name: "MIGRATION", Status: status, Time: end})
	}
}

// saveRestore moves a quiesced PV Domain M by xl save here, scp to the destination and
// xl restore -p there (it arrives paused, like xl migrate -p), timing each part.
func (d *domain) saveRestore(ctx context.Context, dest string) error {
	dir := d.cfg.SaveDir
	if dir == "" {
		dir = "/tmp"
	}
	file := fmt.Sprintf("%s/domainm-migrate-%s.save", dir, d.name)
	step := func(name, host string, argv ...string) error {
		t0 := time.Now()
		_, err := d.x.Run(ctx, host, argv[0], argv[1:]...)
		d.mu.Lock()
		if d.steps == nil {
			d.steps = map[string]syncpoint.Figure{}
		}
		d.steps[name] = syncpoint.Measured(time.Since(t0))
		d.mu.Unlock()
		d.cfg.Log.Info("Domain M's move", "step", name, "took", time.Since(t0).Round(time.Millisecond), "err", err)
		return err
	}
	// xl save destroys the domain once its image is written.
	if err := step("save", "", "xl", "save", d.name, file); err != nil {
		return err
	}
	if err := step("copy", "", "scp", "-q", file, "root@"+dest+":"+file); err != nil {
		return fmt.Errorf("%w (Domain M is saved in %s here: xl restore it)", err, file)
	}
	d.x.Run(ctx, "", "rm", "-f", file)
	if err := step("restore", dest, "xl", "restore", "-p", file); err != nil {
		return fmt.Errorf("%w (Domain M is saved in %s at %s)", err, file, dest)
	}
	d.x.Run(ctx, dest, "rm", "-f", file)
	return nil
}

// Progress reports the outgoing migration's status (xl gives no byte counts).
func (d *domain) Progress(context.Context) (syncpoint.Progress, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.status
	if st == "" {
		st = "none"
	}
	return syncpoint.Progress{Status: st, Error: d.errMsg}, nil
}

// CancelMigration stops xl (killing it) and waits until it has ended.
func (d *domain) CancelMigration(ctx context.Context) error {
	d.mu.Lock()
	cancel, done := d.cancel, d.done
	d.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errGone is a source domain that has left this host (xl destroys it when the
// destination has it).
var errGone = errors.New("migrated away: no such domain here")

// state returns the domain's xl list state ("-b----"), "" if it does not exist.
func (d *domain) state(ctx context.Context) (string, error) {
	out, err := d.x.Run(ctx, d.host, "xl", "list")
	if err != nil {
		return "", err
	}
	return listState(out, d.name), nil
}

// listState finds name's State column in xl list's output.
func listState(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[0] == name {
			return f[4]
		}
	}
	return ""
}

// Running: the domain exists and is neither paused, shut down (suspended), crashed nor
// dying. A destination copy not there yet is not running; a source that migrated away
// is an error.
func (d *domain) Running(ctx context.Context) (bool, error) {
	st, err := d.state(ctx)
	if err != nil {
		return false, err
	}
	if st == "" {
		d.mu.Lock()
		migrated := d.status == "completed"
		d.mu.Unlock()
		if migrated {
			return false, fmt.Errorf("%s: %w", d.where, errGone)
		}
		return false, nil
	}
	return !strings.ContainsAny(st, "pscd"), nil
}

// Stop pauses a running domain (xl pause counts: a paused one is left alone).
func (d *domain) Stop(ctx context.Context) error {
	st, err := d.state(ctx)
	if err != nil {
		return err
	}
	if st == "" {
		return fmt.Errorf("%s: no domain %s", d.where, d.name)
	}
	if strings.ContainsAny(st, "pscd") {
		return nil
	}
	if _, err := d.x.Run(ctx, d.host, "xl", "pause", d.name); err != nil {
		return err
	}
	d.post(syncpoint.Event{Name: "STOP", Time: time.Now(), Detail: "xl pause"})
	return nil
}

// Cont unpauses a paused domain; RESUME is stamped before xl unpause is sent (it may run
// from then).
func (d *domain) Cont(ctx context.Context) error {
	st, err := d.state(ctx)
	if err != nil {
		return err
	}
	switch {
	case st == "":
		return fmt.Errorf("%s: no domain %s", d.where, d.name)
	case strings.ContainsAny(st, "scd"):
		return fmt.Errorf("%s: domain %s is %s (shut down, crashed or dying): xl unpause cannot run it", d.where, d.name, st)
	case !strings.Contains(st, "p"):
		if d.stopped() {
			// it runs, though its last event here says stopped (xl resumed it after a
			// failed move): from now on at the latest
			d.post(syncpoint.Event{Name: "RESUME", Time: time.Now(), Detail: "found running"})
		}
		return nil
	}
	d.post(syncpoint.Event{Name: "RESUME", Time: time.Now(), Detail: "xl unpause sent"})
	_, err = d.x.Run(ctx, d.host, "xl", "unpause", d.name)
	return err
}

// stopped reports whether the last STOP or RESUME recorded here is a STOP.
func (d *domain) stopped() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.events) - 1; i >= 0; i-- {
		switch d.events[i].Name {
		case "STOP":
			return true
		case "RESUME":
			return false
		}
	}
	return false
}

// WaitEvent waits for the first event at index >= from that matches.
func (d *domain) WaitEvent(ctx context.Context, from int, match func(syncpoint.Event) bool) (syncpoint.Event, int, error) {
	for {
		d.mu.Lock()
		n := len(d.events)
		for i := from; i < n; i++ {
			if match(d.events[i]) {
				e := d.events[i]
				d.mu.Unlock()
				return e, i + 1, nil
			}
		}
		ch := d.changed
		d.mu.Unlock()
		from = max(from, n)
		select {
		case <-ch:
		case <-ctx.Done():
			return syncpoint.Event{}, from, ctx.Err()
		}
	}
}

func (d *domain) Events() []syncpoint.Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]syncpoint.Event(nil), d.events...)
}

// took is the outgoing migration's duration, if it ended.
func (d *domain) took() syncpoint.Figure {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started.IsZero() || d.ended.IsZero() {
		return syncpoint.Figure{}
	}
	return syncpoint.Measured(d.ended.Sub(d.started))
}

// endedAt is when the outgoing migration (xl) ended; zero if it did not.
func (d *domain) endedAt() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ended
}
