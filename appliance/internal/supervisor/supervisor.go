// Package supervisor is domainm's daemon: it runs memory passes and disk checks on
// their schedules, hot-reloads the YARA rules, turns changes in findings into alerts,
// serves the control channel of the migration handshake and reports its life to
// systemd (readiness, status, watchdog).
//
// # Concurrency
//
// Each schedule is one goroutine (memory loop, disk loop) that owns its state; a pass
// or check runs in a goroutine of its own so that the loop stays responsive to prepare,
// resume, shutdown and watchdog probes, but a loop never starts a pass while one runs,
// so passes never overlap. The rule set is swapped through an atomic pointer that the
// scan driver reads before every block. Status reads a mutex-guarded snapshot.
//
// # Health
//
// One model (health.go) says what the supervisor does (its state: starting, waiting
// for a memory source that does not exist, monitoring, quiesced, ...) and what keeps it
// from watching the whole target with rules (its problems: no rules, blind spots left by
// the last pass, a failed or stalled pass, disk checks failing or overdue, undelivered
// alerts). Status and /healthz take it when asked; the state log, the metrics and
// systemd's STATUS are written from it whenever the state or the set of problems
// changes, so all of them agree. Every alert the supervisor emits names its target.
//
// # Rules
//
// A rule file that does not compile, at start or at reload, is left out and the rest of
// the folder loads, as domainm rules check and scan-memory decide; a file that was in
// the running set keeps running in its last good version instead, so that breaking one
// file does not switch its rules off nor end their findings. Each broken file is alerted
// once (rule-error, with file and line) and is a rules problem in the health until it is
// fixed or removed (rules-error-cleared). An emptied folder keeps the last good set
// running. Only a folder that cannot be read, or a set that cannot be built at all,
// keeps the whole running set at reload and stops a start (rules.go).
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// Emitter accepts alerts (the alert package's Dispatcher).
type Emitter interface {
	Emit(alert.Event) error
}

// DiskChecker runs one file-integrity check of the target's disk image against its
// baseline and returns the differences as findings (detector "integrity",
// Meta["change"] added/removed/changed), plus YARA findings (detector "yara-file") in
// new and changed files scanned with rules, the running rule set. The baseline stays
// as it is, so a change is returned by every check until the operator updates the
// baseline; the supervisor alerts it once.
type DiskChecker interface {
	Check(ctx context.Context, rules *yara.Rules) (DiskReport, error)
}

// DiskReport is one disk check's result.
type DiskReport struct {
	Findings []detectors.Finding
	// BaselineCreated is set when there was no baseline and this check recorded it.
	BaselineCreated bool
	Entries         int64 // entries checked (or recorded)
}

// Deps are the supervisor's collaborators. Zero values take real defaults.
type Deps struct {
	Log    *slog.Logger
	Clock  Clock   // SystemClock
	Alerts Emitter // required
	// Notify sends an sd_notify message ("READY=1", "STATUS=...", "WATCHDOG=1").
	Notify func(msg string)
	// Watchdog is systemd's WatchdogSec (0: no watchdog pings).
	Watchdog time.Duration
	// OpenSource opens a memory source (memscan.Open with the layout parsed).
	OpenSource func(spec, layout string) (memscan.Source, error)
	// XenDomainAlive reports whether a xen: source's domain still exists, asked before
	// each pass (nil: xenstore, /local/domain/DOMID).
	XenDomainAlive func(domid uint16) (bool, error)
	// OpenXenstore connects to xenstore for a xen: source (nil: xenstore.Open); the
	// supervisor keeps one connection and opens another after a failure.
	OpenXenstore func() (XenStore, error)
	// Disk runs disk checks; nil when the target has no disk configured.
	Disk DiskChecker
	// ShutdownTimeout bounds the clean stop (default 10s).
	ShutdownTimeout time.Duration
	// Metrics registers the supervisor's series; nil for none.
	Metrics prometheus.Registerer
	// AlertsHealthy reports undelivered alerts (the dispatcher's Healthy); nil: none.
	// It becomes the health problem alerts-undelivered.
	AlertsHealthy func() error
}

// Supervisor is one running daemon. Create with New, then Run.
type Supervisor struct {
	cfg  *config.Config
	deps Deps
	log  *slog.Logger
	clk  Clock

	rules   *ruleHolder
	mem     *memLoop
	disk    *diskLoop
	states  *stateLog
	control *control.Server
	m       *metrics
	hm      *healthMetrics

	async sync.WaitGroup // emitAsync in flight
	xen   *xenConn       // xenstore, for a xen: source (xen.go)
	live  liveConfig     // keys a configuration reload changes (live.go)

	mu           sync.Mutex
	state        string
	reason       string    // why the state is what it is
	stateSince   time.Time // when it was entered
	target       detectors.Target
	alertsErr    error                // the alert sinks' health, as last looked at
	problemSince map[string]time.Time // problems as last published, with when they appeared
	pubKey       string               // state and problem codes as last published
	pubCodes     []string

	pubMu sync.Mutex // serialises publish
}

// New checks deps and returns a supervisor for cfg.
func New(cfg *config.Config, deps Deps) (*Supervisor, error) {
	if deps.Alerts == nil {
		return nil, errors.New("supervisor: no alert emitter")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = SystemClock{}
	}
	if deps.Notify == nil {
		deps.Notify = func(string) {}
	}
	if deps.ShutdownTimeout <= 0 {
		deps.ShutdownTimeout = 10 * time.Second
	}
	if deps.OpenXenstore == nil {
		deps.OpenXenstore = openXenstore
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("registering supervisor metrics: %w", err)
	}
	hm, err := newHealthMetrics(deps.Metrics)
	if err != nil {
		return nil, fmt.Errorf("registering supervisor health metrics: %w", err)
	}
	s := &Supervisor{cfg: cfg, deps: deps, log: deps.Log, clk: deps.Clock, state: control.StateStarting, m: m, hm: hm,
		xen:        &xenConn{open: deps.OpenXenstore},
		stateSince: deps.Clock.Now(), live: newLiveConfig(),
		target: detectors.Target{Name: cfg.Target.Name, UUID: cfg.Target.UUID, Host: cfg.Target.Host, Source: cfg.Target.Memory}}
	if s.deps.OpenSource == nil {
		s.deps.OpenSource = s.openSource
	}
	return s, nil
}

// OpenSource opens spec with a layout given as text (memscan.Open). A xen: source
// opened this way probes for the target's frames; the supervisor's own open
// (Supervisor.openSource) gives it dom0's list.
func OpenSource(spec, layout string) (memscan.Source, error) {
	return openSource(spec, layout, nil)
}

func openSource(spec, layout string, frames []memscan.Range) (memscan.Source, error) {
	var opts memscan.OpenOptions
	if layout != "" {
		l, err := memscan.ParseLayout(layout)
		if err != nil {
			return nil, fmt.Errorf("layout %q: %w", layout, err)
		}
		opts.Layout = l
	}
	opts.XenFrames = frames
	return memscan.Open(spec, opts)
}

// openSource is the supervisor's default Deps.OpenSource: a xen:DOMID source maps the
// frames dom0 listed in domainm/frames (domainm-xen grant: Xen's p2m of the target) when
// domainm/target names that domain, read on the supervisor's one xenstore connection,
// as the refresh reads them (xenList). Without a list memscan probes the low 4 GiB of
// frames, which in a PVH Domain M costs two hypercalls per frame (the nested lab's run
// 8 had not finished after 19 min).
func (s *Supervisor) openSource(spec, layout string) (memscan.Source, error) {
	var frames []memscan.Range
	if kind, arg, ok := strings.Cut(spec, ":"); ok && kind == "xen" {
		if id, err := strconv.Atoi(arg); err == nil {
			frames = s.xenList(id)
		}
	}
	return openSource(spec, layout, frames)
}

// Run starts everything, reports READY=1 and runs until ctx is cancelled, then stops
// within the shutdown timeout. An error before readiness means the daemon could not
// start (a rules folder that cannot be read, a memory source that cannot be opened, ...); it is alerted too,
// since the target is then not watched.
//
// A file memory source that does not exist yet (the target has not started) is not an
// error: the supervisor starts in state waiting, reports READY=1 (it is up: alerts,
// status, health and the control socket work, and systemd must not restart it in a
// loop), says in STATUS that it waits for the target, and starts monitoring when the
// file appears.
func (s *Supervisor) Run(ctx context.Context) error {
	err := s.run(ctx)
	if err != nil {
		s.emit(alert.Health(s.clk.Now(), alert.SevHigh, "supervisor", "start-failed",
			fmt.Sprintf("Domain M could not start monitoring %s: %v", s.cfg.Target.Name, err)))
	}
	return err
}

func (s *Supervisor) run(ctx context.Context) (err error) {
	if err := os.MkdirAll(s.cfg.State.Dir, 0o700); err != nil {
		return fmt.Errorf("state folder: %w", err)
	}
	sl, err := openStateLog(filepath.Join(s.cfg.State.Dir, control.StateLogFile))
	if err != nil {
		return err
	}
	s.states = sl
	defer sl.close()
	defer s.xen.close()
	defer func() {
		if err != nil { // the state log must not end at "starting"
			s.setState(control.StateStopped, "start failed: "+err.Error(), nil)
		}
	}()
	s.setState(control.StateStarting, "process started", nil)

	s.status("compiling rules in %s", s.cfg.Rules.Dir)
	s.rules = newRuleHolder(s)
	if err := s.rules.loadInitial(); err != nil {
		return err
	}
	s.status("opening memory source %s", s.cfg.Target.Memory)
	src, sf, err := s.openTracked(s.cfg.Target.Memory, s.cfg.Target.Layout)
	waiting, openErr := err != nil && awaitable(sf, err), err
	if err != nil && !waiting {
		return fmt.Errorf("opening memory source: %w", err)
	}
	s.mem = newMemLoop(s, src, sf)
	if waiting {
		s.mem.startWaiting()
	}
	if s.deps.Disk != nil {
		s.disk = newDiskLoop(s, s.deps.Disk)
	}
	watcher, err := s.rules.watch()
	if err != nil {
		s.mem.closeSource()
		return err
	}
	if s.cfg.Control.Socket != "" {
		s.control, err = control.Listen(s.cfg.Control.Socket, s, s.log.With("component", "control"))
		if err != nil {
			watcher.Close()
			s.mem.closeSource()
			return err
		}
	}

	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(runCtx) }()
	}
	if s.disk != nil {
		start(s.disk.run)
	}
	start(func(ctx context.Context) { s.rules.run(ctx, watcher) })
	if dev := s.cfg.Control.Device; dev != "" {
		start(func(ctx context.Context) {
			control.ServeDevice(ctx, dev, s, s.log.With("component", "control", "device", dev))
		})
	}
	if s.deps.Watchdog > 0 {
		start(s.watchdog)
	}
	if waiting {
		missing := missingText(s.cfg.Target.Memory, openErr)
		s.setState(control.StateWaiting, missing, nil)
		s.emit(alert.Health(s.clk.Now(), alert.SevMedium, "memory-source", "waiting",
			fmt.Sprintf("%s (of %s; the target has not started?): not monitoring until it appears", missing, s.cfg.Target.Name)))
	} else {
		s.setState(control.StateMonitoring, "started", nil)
	}
	// READY=1 also while waiting for the target: see Run.
	s.deps.Notify("READY=1")
	start(s.mem.run)
	start(s.watchHealth)
	verb := "monitoring"
	if waiting {
		verb = "waiting for"
	}
	s.emit(alert.Health(s.clk.Now(), alert.SevInfo, "supervisor", "started",
		fmt.Sprintf("Domain M started, %s %s: memory %s every %v, %d rules", verb, s.cfg.Target.Name, s.cfg.Target.Memory, s.memInterval(), s.rules.count())))

	<-ctx.Done()
	s.deps.Notify("STOPPING=1\nSTATUS=stopping")
	s.setState(control.StateStopping, "signal", nil)
	// Say so: from here the target is not watched until the next start.
	s.emit(alert.Health(s.clk.Now(), alert.SevMedium, "supervisor", "stopping",
		fmt.Sprintf("Domain M stops monitoring %s (stop requested)", s.currentTarget().Name)))
	s.log.Info("stopping", "timeout", s.deps.ShutdownTimeout)
	if s.control != nil {
		s.control.Close()
	}
	stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.deps.ShutdownTimeout):
		s.log.Error("scan loops did not stop in time; exiting anyway", "timeout", s.deps.ShutdownTimeout)
	}
	s.async.Wait()
	s.setState(control.StateStopped, "", nil)
	return nil
}

// setState records a state change and publishes the health model with it (state log,
// metrics, STATUS).
func (s *Supervisor) setState(state, reason string, cursor *uint64) {
	s.mu.Lock()
	if state != s.state {
		s.stateSince = s.clk.Now()
	}
	s.state, s.reason = state, reason
	s.mu.Unlock()
	s.publish(true, reason, cursor)
}

func (s *Supervisor) currentState() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Target is the watched VM's identity as it is now (it changes on resume).
func (s *Supervisor) Target() detectors.Target { return s.currentTarget() }

func (s *Supervisor) currentTarget() detectors.Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.target
}

// status sends a STATUS= line to systemd and logs it; while the supervisor is not
// healthy the line says so.
func (s *Supervisor) status(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	var codes []string
	for _, c := range s.pubCodes {
		if c != control.ProblemNotMonitored { // the message says what it does
			codes = append(codes, c)
		}
	}
	s.mu.Unlock()
	if len(codes) > 0 {
		msg += " [unhealthy: " + strings.Join(codes, ", ") + "]"
	}
	s.log.Debug("status", "msg", msg)
	s.deps.Notify("STATUS=" + msg)
}

// named gives an event that does not name its target (health events) the target's
// identity as it is now, so that every alert says which VM it is about.
func (s *Supervisor) named(e *alert.Event) {
	if e.DomainM.Target == nil {
		e.SetTarget(s.currentTarget())
	}
}

// emitAll emits a batch: one spool commit when the emitter supports it.
func (s *Supervisor) emitAll(evs []alert.Event) {
	if len(evs) == 0 {
		return
	}
	for i := range evs {
		s.named(&evs[i])
	}
	b, ok := s.deps.Alerts.(interface{ EmitAll([]alert.Event) error })
	if !ok {
		for _, e := range evs {
			s.emit(e)
		}
		return
	}
	if err := b.EmitAll(evs); err != nil {
		s.log.Error("alerts not accepted", "err", err, "count", len(evs))
	}
}

// emitAsync emits without waiting for the spool's commit (used on the migration path,
// where every millisecond is downtime). Run waits for these before returning.
func (s *Supervisor) emitAsync(e alert.Event) {
	s.named(&e)
	s.async.Add(1)
	go func() { defer s.async.Done(); s.emit(e) }()
}

// emit hands an alert to the dispatcher; a failure is logged (the dispatcher alerts
// on its own troubles).
func (s *Supervisor) emit(e alert.Event) {
	s.named(&e)
	if err := s.deps.Alerts.Emit(e); err != nil {
		s.log.Error("alert not accepted", "err", err, "action", e.Event.Action, "message", e.Message)
	}
}
