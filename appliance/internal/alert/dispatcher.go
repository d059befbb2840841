package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/domainm/domainm/detectors"
)

// Errors Emit returns.
var (
	ErrClosed  = errors.New("alert dispatcher closed")
	ErrTimeout = errors.New("alert spool did not commit in time")
)

// SpoolFile is the spool's file name in the state folder.
const SpoolFile = "alert-spool.db"

// maxEventBytes bounds one event's JSON; bigger events lose their match details.
const maxEventBytes = 32 << 10

// emitTimeout bounds how long Emit waits for the spool's commit (an fsync), so a
// hung disk cannot stall detection forever.
const emitTimeout = 10 * time.Second

// Dispatcher accepts events, spools them durably and delivers them to every sink.
// It is safe for concurrent use. Emit never waits for a sink: only for the spool's
// commit, which groups concurrent callers into one fsync.
type Dispatcher struct {
	log      *slog.Logger
	hostname string
	clk      Clock
	started  time.Time
	sp       *spool
	m        *metrics
	runners  []*runner

	reqs    chan *emitReq
	stop    chan struct{}
	cancel  context.CancelFunc // stops the runners; before their sinks are closed
	closing sync.Once
	wg      sync.WaitGroup
	writerW sync.WaitGroup
	// writerDone is closed when the writer has committed its last events.
	writerDone chan struct{}

	// target names the watched VM on events that do not (the dispatcher's own health
	// alerts); set by SetTarget.
	target atomic.Pointer[func() detectors.Target]

	mu       sync.Mutex
	closed   bool
	lastFull map[string]time.Time // per sink: last "spool full" health event
	dropsN   map[string]int       // drops since then
}

type emitReq struct {
	entries []entry
	done    chan error
}

// New opens the spool in stateDir and starts one delivery loop per sink. reg may be
// nil (no metrics). cfg is validated (and its defaults filled) here too.
func New(cfg Config, stateDir string, log *slog.Logger, reg prometheus.Registerer) (*Dispatcher, error) {
	return NewWithClock(cfg, stateDir, log, reg, systemClock{})
}

// NewWithClock is New with the dispatcher's schedules on clk (see Clock).
func NewWithClock(cfg Config, stateDir string, log *slog.Logger, reg prometheus.Registerer, clk Clock) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("alert config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "alert")
	host := cfg.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("alert spool folder: %w", err)
	}
	maxes := map[string]int64{}
	for _, s := range cfg.Sinks {
		maxes[s.Name] = int64(s.SpoolMaxBytes)
	}
	sp, orphans, err := openSpool(filepath.Join(stateDir, SpoolFile), maxes)
	if err != nil {
		return nil, err
	}
	for name, n := range orphans {
		log.Warn("discarded the spool of a sink no longer configured", "sink", name, "alerts", n)
	}
	for _, s := range cfg.Sinks {
		n, err := sp.dropAcked(s.Name)
		if err != nil {
			sp.close()
			return nil, err
		}
		if n > 0 {
			log.Info("not sending again what the receiver acknowledged before the last stop", "sink", s.Name, "alerts", n)
		}
	}
	m, err := newMetrics(reg, sp, cfg.Sinks)
	if err != nil {
		sp.close()
		return nil, fmt.Errorf("registering alert metrics: %w", err)
	}
	d := &Dispatcher{
		log: log, hostname: host, clk: clk, sp: sp, m: m, started: clk.Now(),
		reqs: make(chan *emitReq, 1024), stop: make(chan struct{}), writerDone: make(chan struct{}),
		lastFull: map[string]time.Time{}, dropsN: map[string]int{},
	}
	for _, s := range cfg.Sinks {
		r, err := newRunner(s, d)
		if err != nil {
			d.m.unregister()
			sp.close()
			return nil, fmt.Errorf("alert sink %s: %w", s.Name, err)
		}
		d.runners = append(d.runners, r)
	}
	d.writerW.Add(1)
	go d.writer()
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	for _, r := range d.runners {
		d.wg.Add(1)
		go func() { defer d.wg.Done(); r.run(ctx) }()
	}
	return d, nil
}

// Emit spools ev for every sink whose min_severity it meets and returns once the
// spool has committed it to disk: from then on it survives a crash and will be
// delivered at least once. It does not wait for any sink. Missing observer fields,
// @timestamp and event.id are filled in.
func (d *Dispatcher) Emit(ev Event) error { return d.EmitAll([]Event{ev}) }

// EmitAll is Emit for several events in one commit, in order.
func (d *Dispatcher) EmitAll(evs []Event) error {
	var entries []entry
	for i := range evs {
		e, err := d.encode(&evs[i])
		if err != nil {
			return err
		}
		entries = append(entries, e)
	}
	return d.emitEntries(entries)
}

// emitEntries queues encoded entries for the writer and waits for their commit.
func (d *Dispatcher) emitEntries(entries []entry) error {
	req := &emitReq{entries: entries, done: make(chan error, 1)}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return ErrClosed
	}
	t := time.NewTimer(emitTimeout)
	defer t.Stop()
	select {
	case d.reqs <- req:
	case <-d.stop:
		return ErrClosed
	case <-t.C:
		return ErrTimeout
	}
	select {
	case err := <-req.done:
		return err
	case <-d.writerDone:
		select { // the writer drains the queue before it ends
		case err := <-req.done:
			return err
		default:
			return ErrClosed
		}
	case <-t.C:
		return ErrTimeout
	}
}

func (d *Dispatcher) encode(ev *Event) (entry, error) {
	d.fill(ev)
	data, err := marshalEvent(ev)
	if err != nil {
		return entry{}, fmt.Errorf("encoding alert %s: %w", ev.Event.ID, err)
	}
	if len(data) > maxEventBytes {
		small := *ev
		small.DomainM.Matches, small.DomainM.Meta, small.DomainM.Changes, small.Tags = nil, nil, nil, nil
		if data, err = marshalEvent(&small); err != nil {
			return entry{}, fmt.Errorf("encoding alert %s: %w", ev.Event.ID, err)
		}
	}
	e := entry{sev: ev.Severity(), data: data}
	for _, r := range d.runners {
		if e.sev <= r.cfg.MinSeverity {
			e.sinks = append(e.sinks, r.cfg.Name)
		}
	}
	return e, nil
}

func (d *Dispatcher) fill(ev *Event) {
	if f := d.target.Load(); f != nil && ev.DomainM.Target == nil {
		ev.SetTarget((*f)())
	}
	fillEvent(ev, d.hostname)
}

// SetTarget gives the dispatcher the watched VM's identity (asked for at each use: it
// changes on migration), so that its own health alerts name the target too.
func (d *Dispatcher) SetTarget(f func() detectors.Target) { d.target.Store(&f) }

// fillEvent completes what the constructors leave to the dispatcher.
func fillEvent(ev *Event, hostname string) {
	ev.ECS.Version = ECSVersion
	if !ev.Severity().valid() {
		ev.SetSeverity(SevMedium)
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = time.Now().UTC()
	}
	if ev.Event.Created.IsZero() {
		ev.Event.Created = time.Now().UTC()
	}
	if ev.Observer.Hostname == "" {
		ev.Observer.Hostname = hostname
	}
	ev.Observer.Product, ev.Observer.Vendor, ev.Observer.Type = "Domain M", "Domain M", "ids"
	if ev.Event.Dataset == "" {
		ev.Event.Dataset, ev.Event.Module = "domainm.alert", "domainm"
	}
	if ev.Event.ID == "" {
		ev.Event.ID = occurrenceID(ev)
	}
}

// writer commits queued events, grouping whatever is waiting into one transaction.
func (d *Dispatcher) writer() {
	defer d.writerW.Done()
	defer close(d.writerDone)
	for {
		var batch []*emitReq
		select {
		case r := <-d.reqs:
			batch = append(batch, r)
		case <-d.stop:
			d.drainReqs()
			return
		}
		n := len(batch[0].entries)
	more:
		for n < 4096 {
			select {
			case r := <-d.reqs:
				batch = append(batch, r)
				n += len(r.entries)
			default:
				break more
			}
		}
		d.commit(batch)
	}
}

// drainReqs commits what was queued before Close.
func (d *Dispatcher) drainReqs() {
	for {
		select {
		case r := <-d.reqs:
			d.commit([]*emitReq{r})
		default:
			return
		}
	}
}

func (d *Dispatcher) commit(batch []*emitReq) {
	var entries []entry
	for _, r := range batch {
		entries = append(entries, r.entries...)
	}
	drops, err := d.sp.add(entries)
	for _, r := range batch {
		r.done <- err
	}
	if err != nil {
		d.log.Error("alert spool commit failed; alerts not accepted", "alerts", len(entries), "err", err)
		return
	}
	dropped := map[string]map[Severity]int{}
	for _, dr := range drops {
		if dropped[dr.sink] == nil {
			dropped[dr.sink] = map[Severity]int{}
		}
		dropped[dr.sink][dr.sev]++
		d.m.dropped.WithLabelValues(dr.sink, dr.sev.String(), "spool_full").Inc()
	}
	for _, e := range entries {
		for _, s := range e.sinks {
			d.m.emitted.WithLabelValues(s, e.sev.String()).Inc()
		}
	}
	for sink, bySev := range dropped {
		d.spoolFull(sink, bySev)
	}
	for _, r := range d.runners {
		r.poke()
	}
}

// spoolFull says loudly that a sink's spool overflowed: an error log every time, a
// health alert (to every sink) at most once a minute per sink.
func (d *Dispatcher) spoolFull(sink string, bySev map[Severity]int) {
	n := 0
	attrs := []any{"sink", sink}
	for sev, c := range bySev {
		n += c
		attrs = append(attrs, "dropped_"+sev.String(), c)
	}
	d.log.Error("alert spool full: dropping the least severe alerts", attrs...)
	d.mu.Lock()
	d.dropsN[sink] += n
	now := d.clk.Now()
	if now.Sub(d.lastFull[sink]) < time.Minute || d.closed {
		d.mu.Unlock()
		return
	}
	d.lastFull[sink] = now
	total := d.dropsN[sink]
	d.dropsN[sink] = 0
	d.mu.Unlock()
	ev := Health(now, SevHigh, "alert-spool", "full",
		fmt.Sprintf("alert spool of sink %s is full: dropped %d alerts, least severe first; the sink is not receiving", sink, total))
	ev.DomainM.Sink, ev.DomainM.Dropped = sink, total
	e, err := d.encode(&ev)
	if err != nil {
		return
	}
	select { // never wait here: this runs on the writer goroutine
	case d.reqs <- &emitReq{entries: []entry{e}, done: make(chan error, 1)}:
	default:
	}
}

// SinkStatus is one sink's state, for status output and health checks.
type SinkStatus struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Up        bool      `json:"up"`
	Spooled   int       `json:"spooled"`
	Bytes     int64     `json:"spool_bytes"`
	MaxBytes  int64     `json:"spool_max_bytes"`
	LastError string    `json:"last_error,omitempty"`
	LastOK    time.Time `json:"last_ok,omitzero"`
}

// Status reports every sink.
func (d *Dispatcher) Status() []SinkStatus {
	var out []SinkStatus
	for _, r := range d.runners {
		n, b := d.sp.stats(r.cfg.Name)
		st := r.status()
		st.Spooled, st.Bytes = n, b
		out = append(out, st)
	}
	return out
}

// Healthy returns an error naming the sinks that hold undelivered alerts and have
// not delivered for longer than grace (counted from New at most); nil otherwise.
func (d *Dispatcher) Healthy(grace time.Duration) error {
	var errs []error
	for _, s := range d.Status() {
		since := s.LastOK
		if since.Before(d.started) {
			since = d.started // failing since the start at most
		}
		if s.Spooled > 0 && !s.Up && d.clk.Now().Sub(since) > grace {
			errs = append(errs, fmt.Errorf("alert sink %s: %d alerts waiting: %s", s.Name, s.Spooled, s.LastError))
		}
	}
	return errors.Join(errs...)
}

// Flush waits until every sink's spool is empty or ctx ends.
func (d *Dispatcher) Flush(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		left := 0
		for _, r := range d.runners {
			n, _ := d.sp.stats(r.cfg.Name)
			left += n
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("flushing alerts: %d still spooled: %w", left, ctx.Err())
		case <-t.C:
		}
	}
}

// closeDrain bounds how long Close lets delivery empty the spools first.
const closeDrain = 2 * time.Second

// Close stops delivery and closes the spool. It first gives the sinks up to 2s (at
// most half of ctx's remaining time) to deliver and confirm what is spooled, so that
// a clean stop does not re-send at the next start; what is still undelivered stays
// spooled. It commits what Emit had queued and waits for writes in progress, at most
// until ctx ends.
func (d *Dispatcher) Close(ctx context.Context) error {
	var err error
	d.closing.Do(func() {
		drain := closeDrain
		if dl, ok := ctx.Deadline(); ok {
			drain = min(drain, time.Until(dl)/2)
		}
		if drain > 0 {
			dctx, cancel := context.WithTimeout(ctx, drain)
			d.Flush(dctx)
			cancel()
		}
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		close(d.stop)
		d.cancel()
		done := make(chan struct{})
		go func() { d.wg.Wait(); d.writerW.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("closing alert sinks: %w", ctx.Err())
			for _, r := range d.runners {
				r.closeSink() // unblocks a write in progress
			}
			<-done
		}
		for _, r := range d.runners {
			r.closeSink()
		}
		d.m.unregister()
		if cerr := d.sp.close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing alert spool: %w", cerr)
		}
	})
	return err
}

// marshalEvent is compact JSON without HTML escaping ("&" stays "&").
func marshalEvent(e *Event) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
