package supervisor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// memLoop schedules memory passes and carries out prepare and resume. Only its run
// goroutine touches the fields above mu; mu guards the snapshot for status.
type memLoop struct {
	s      *Supervisor
	driver *memscan.Driver
	src    memscan.Source // nil while quiesced
	file   sourceFile     // where src came from
	gone   bool           // src's file was removed (alerted)
	// aliveUnknown: the last liveness question about a xen: source's domain had no
	// answer (logged when it starts).
	aliveUnknown bool
	// vanished: when the liveness check first found a xen: source's domain gone while
	// monitoring it; alerted only xenVanishGrace later unless a prepare comes first
	// (source.go).
	vanished time.Time
	wait     sourceWait // while the source does not exist (source.go)
	spots    blindSpots // blocks the running pass could not scan (blindspots.go)
	track    *tracker
	// sweep picks the frames no list names that a xen: source's refresh asks Xen
	// about; refreshAt is when the next refresh is due; refreshErr is the last
	// refresh failure logged; mappedNoted the frame count last written to
	// domainm/mapped-frames (xen.go).
	sweep       memscan.XenSweep
	refreshAt   time.Time
	refreshErr  string
	mappedNoted uint64

	cursor  uint64                       // where the next pass starts (non-zero after an interrupted pass)
	partial map[string]detectors.Finding // findings of the interrupted part of the current pass
	fp      *memscan.Fingerprint         // taken at prepare
	failing bool                         // the last pass failed (alerted once)
	rescan  bool                         // rules changed during the running pass
	// passRules is the rule set the current pass (all its parts) started with; mixed is
	// set when a part ran with another, so the pass cannot decide that a finding ended.
	passRules string
	mixed     bool
	late      bool      // the running pass was alerted overdue
	passStart time.Time // when the running pass (its current part) started
	// kview runs the kernel-integrity checks after each pass, ktrack holds their
	// findings (kernel.go).
	kview  kernelView
	ktrack *kernelTracker
	// guest attributes matches to the guest's processes (guest.go); guestAlerted: an
	// unknown layout was alerted for the current source.
	guest        guestView
	guestAlerted bool

	cmds  chan memCmd
	probe chan chan bool

	mu       sync.Mutex
	running  bool
	progress time.Time // last block finished (or pass start)
	passes   int
	findings int
	lastPass time.Time
	lastTook time.Duration // the last complete pass's duration
	stats    memscan.PassResult
	health   passHealth // the last pass's verdict for the health model
	layout   string     // the source's layout: the configuration's, or the last resume's
	epoch    uint64     // highest control epoch accepted (see admit)
}

type memCmd struct {
	prepare bool
	resume  control.ResumeArgs
	reply   chan memReply
	fence   *fence // settles whether it is carried out or abandoned (stale.go)
}

type memReply struct {
	resp control.Response
	err  error
}

type passOutcome struct {
	res     memscan.PassResult
	err     error
	started time.Time
	kernel  kernelNote
	guest   guestNote
	frames  frameNote // the xen: source's refresh before the pass
}

func newMemLoop(s *Supervisor, src memscan.Source, sf sourceFile) *memLoop {
	m := &memLoop{
		s:      s,
		src:    src,
		file:   sf,
		layout: sf.layout,
		driver: memscan.NewDriver(memscan.DriverConfig{
			BlockSize:   int(s.cfg.Memory.BlockSize),
			Overlap:     int(s.cfg.Memory.Overlap),
			Workers:     s.cfg.Memory.Workers,
			ReusePasses: s.cfg.Memory.RescanAfterPasses,
			RunBudget:   s.cfg.Memory.DriverRunBudget(),
		}),
		track:   newTracker(),
		sweep:   xenSweepDefault,
		partial: map[string]detectors.Finding{},
		cmds:    make(chan memCmd),
		probe:   make(chan chan bool),
	}
	s.restoreMemory(m.track)
	m.ktrack = s.restoreKernel()
	return m
}

// run is the memory schedule: a pass every interval (measured start to start; a pass
// that takes longer is followed by the next at once, never overlapped), a pass right
// after a rule reload, and prepare/resume in between blocks.
func (m *memLoop) run(ctx context.Context) {
	var (
		passCancel context.CancelFunc
		done       chan passOutcome
		next       = m.s.clk.Now() // first pass at once
		timer      <-chan time.Time
		overdue    <-chan time.Time // fires when quiesced for longer than control.quiesce_timeout
		late       <-chan time.Time // fires when the running pass is overdue
	)
	startPass := func() {
		pctx, cancel := context.WithCancel(context.Background())
		passCancel = cancel
		done = make(chan passOutcome, 1)
		started := m.s.clk.Now()
		m.setRunning(true, started)
		src, startAt := m.src, m.cursor
		xsrc, isXen := src.(xenRefresher)
		domid, alive := m.file.domid, m.file.alive
		refresh := isXen && domid >= 0 && !started.Before(m.refreshAt)
		if id := m.s.rules.id(); startAt == 0 {
			m.passRules, m.mixed = id, false
		} else if id != m.passRules {
			m.mixed = true
		}
		late = m.s.clk.After(overdueFactor * m.s.memInterval())
		m.late, m.passStart = false, started
		opts := memscan.PassOptions{Rules: m.s.rules.current, StartAt: startAt,
			Progress: func(_, _ uint64) { m.beat() }}
		go func(out chan<- passOutcome) {
			var fn frameNote
			if refresh {
				// The target's frames now: those it populated since are scanned in
				// this pass (from its start if any lie below the cursor).
				fn = m.refreshFrames(xsrc, domid, alive)
				if fn.err == nil && gainedBelow(fn.change, opts.StartAt) {
					opts.StartAt = 0
				}
			}
			res, err := m.driver.Pass(pctx, src, opts)
			o := passOutcome{res: res, err: err, started: started, frames: fn}
			if err == nil && pctx.Err() == nil {
				o.guest = m.guest.annotate(pctx, src, &o.res, opts.Rules(), m.driver.Config())
				if pctx.Err() == nil { // a prepare during attribution need not wait for the checks
					o.kernel = m.kview.check(m.guest.g)
				}
			}
			out <- o
		}(done)
		m.s.status("memory pass from %#x", startAt)
	}
	// finishPass handles the outcome o of the running pass; with o nil it stops the
	// pass and waits for its outcome (the blocks in flight finish first).
	finishPass := func(o *passOutcome) {
		if done == nil {
			return
		}
		if o == nil {
			passCancel()
			r := <-done
			o = &r
		}
		passCancel()
		done, passCancel, late = nil, nil, nil
		m.setRunning(false, time.Time{})
		m.handle(*o)
		m.lateEnded(*o)
		next = o.started.Add(m.s.memInterval())
		if m.rescan {
			// Blocks scanned before the swap have not seen the new rules yet: go
			// again at once (blocks already scanned with them are skipped).
			next, m.rescan = m.s.clk.Now(), false
		}
	}
	defer func() {
		finishPass(nil)
		m.closeSource()
	}()
	m.apply(m.s.rules.cur.Load()) // the findings restored from before a restart meet the rules loaded now
	for {
		timer = nil
		if done == nil && (m.src != nil || m.wait.waiting) {
			timer = m.s.clk.After(max(0, next.Sub(m.s.clk.Now())))
		}
		select {
		case <-ctx.Done():
			return
		case <-timer:
			if !m.checkSource() {
				next = m.s.clk.Now().Add(m.retryIn())
				continue
			}
			startPass()
		case <-m.wait.wake: // the awaited source's folder changed (nil while not waiting)
			next = m.s.clk.Now()
		case <-m.s.live.memWake: // memory.interval reloaded
			next = replan(next, m.s.clk.Now(), m.s.memInterval())
		case o := <-done: // nil (blocks forever) while no pass runs
			finishPass(&o)
			m.s.status("monitoring %s; next memory pass at %s", m.s.cfg.Target.Name, next.Format(time.RFC3339))
		case <-m.s.rules.reloaded:
			m.apply(m.s.rules.cur.Load())
			if done == nil {
				next = m.s.clk.Now()
			} else {
				m.rescan = true // the running pass uses the new set from its next run of blocks on
			}
		case c := <-m.cmds:
			if err := m.admit(c); err != nil {
				c.reply <- memReply{resp: control.Response{State: m.s.currentState()}, err: err}
			} else if c.prepare {
				t0 := time.Now()
				finishPass(nil)
				t1 := time.Now()
				wasQuiesced := m.src == nil
				r := m.prepare(c.fence)
				m.s.log.Info("prepare done", "stop_pass_took", t1.Sub(t0), "total", time.Since(t0), "ok", r.err == nil)
				if r.err == nil && !wasQuiesced {
					overdue = m.s.clk.After(m.s.quiesceTimeout())
				}
				c.reply <- r
			} else {
				r := m.resume(c.resume, c.fence.commit)
				if r.err == nil {
					next = m.s.clk.Now() // continue from the cursor at once
					overdue = nil
				}
				c.reply <- r
			}
		case <-overdue:
			overdue = nil
			// A coordinator that died between prepare and resume leaves the target
			// unwatched: say so loudly.
			m.s.emitAsync(alert.Health(m.s.clk.Now(), alert.SevHigh, "supervisor", "quiesced-too-long",
				fmt.Sprintf("monitoring of %s paused for migration %v ago and not resumed: the target is not watched",
					m.s.currentTarget().Name, m.s.quiesceTimeout())))
		case <-late:
			late = nil
			m.passOverdue()
		case p := <-m.probe:
			p <- m.healthy()
		}
	}
}

// handle turns a pass's outcome into alerts and state.
func (m *memLoop) handle(o passOutcome) {
	m.framesNoted(o.frames, o.started)
	m.s.m.pass(o.res, o.err)
	if o.err == nil && len(o.res.Errors) > 0 && len(o.res.Errors) == o.res.Blocks {
		o.err = fmt.Errorf("no block could be read or scanned (%d errors; first: %v)", len(o.res.Errors), o.res.Errors[0])
	}
	if o.err != nil {
		m.s.log.Error("memory pass failed", "err", o.err)
		if !m.failing {
			m.s.emit(alert.Health(m.s.clk.Now(), alert.SevHigh, "memory-source", "pass-failed",
				fmt.Sprintf("memory pass over %s failed: %v", m.s.currentTarget().Source, o.err)))
		}
		m.failing = true
		m.passFailed(o.err, o.res)
		return
	}
	if m.failing {
		m.s.emit(alert.Health(m.s.clk.Now(), alert.SevInfo, "memory-source", "recovered", "memory passes work again"))
		m.failing = false
	}
	res := o.res
	m.guestNoted(o.guest)
	m.kernelNoted(o.kernel)
	spotted := m.noteBlindSpots(res)
	fs := m.s.suppress(yara.MemoryFindings(res.Matches, m.s.currentTarget(), m.s.clk.Now().UTC()), false)
	rules := m.s.rules.cur.Load()
	if rules.rules.ID() != m.passRules {
		m.mixed = true // swapped during the pass: a follow-up pass runs at once
	}
	var c changes
	if res.Complete {
		mergeFindings(m.partial, fs)
		all := make([]detectors.Finding, 0, len(m.partial))
		for _, k := range slices.Sorted(maps.Keys(m.partial)) {
			all = append(all, m.partial[k])
		}
		c = m.track.update(all, !m.mixed && !spotted, rules)
		m.partial = map[string]detectors.Finding{}
		m.cursor = 0
	} else {
		mergeFindings(m.partial, fs)
		c = m.track.update(fs, false, rules)
		m.cursor = res.Cursor
	}
	m.report(c)
	m.mu.Lock()
	m.stats = res
	m.findings = m.track.len()
	if res.Complete {
		m.passes++
		m.lastPass = m.s.clk.Now()
		m.s.m.lastPass.Set(float64(m.lastPass.UnixNano()) / 1e9)
		m.lastTook = m.lastPass.Sub(o.started)
		m.s.m.passSeconds.Set(m.lastPass.Sub(o.started).Seconds())
		m.s.m.passDuration.Observe(m.lastPass.Sub(o.started).Seconds())
	}
	m.mu.Unlock()
	m.s.log.Info("memory pass", "complete", res.Complete, "cursor", fmt.Sprintf("%#x", res.Cursor),
		"blocks", res.Blocks, "scanned", res.BlocksScanned, "unchanged", res.BlocksUnchanged, "zero", res.BlocksZero,
		"errors", len(res.Errors), "findings", m.track.len(), "new", len(c.added), "updated", len(c.updated),
		"gone", len(c.gone), "retired", len(c.retired),
		"took", m.s.clk.Now().Sub(o.started))
}

// prepare runs after the pass in flight stopped: fingerprint, release the source. It
// changes nothing when the coordinator gave up on it (f) by then, and releases nothing
// when it gives up before the switch.
func (m *memLoop) prepare(f *fence) memReply {
	cur := m.cursor
	if m.wait.waiting {
		return memReply{resp: control.Response{State: control.StateWaiting},
			err: control.Errorf(control.CodeWrongState, "not monitoring: waiting for the memory source %s", m.file.spec)}
	}
	if m.src == nil {
		return memReply{resp: control.Response{State: control.StateQuiesced, Cursor: (*control.Addr)(&cur)}}
	}
	if err := f.live(); err != nil { // the blocks in flight took longer than it waits
		return memReply{resp: control.Response{State: control.StateMonitoring}, err: err}
	}
	m.s.setState(control.StateQuiescing, "prepare", &cur)
	tf := time.Now()
	fp, err := memscan.TakeFingerprint(m.src)
	fpTook := time.Since(tf)
	if err != nil {
		m.s.setState(control.StateMonitoring, "prepare failed", &cur)
		return memReply{resp: control.Response{State: control.StateMonitoring},
			err: fmt.Errorf("taking page fingerprints: %w", err)}
	}
	if err := f.commit(); err != nil {
		m.s.setState(control.StateMonitoring, "prepare refused: "+err.Error(), &cur)
		return memReply{resp: control.Response{State: control.StateMonitoring}, err: err}
	}
	m.fp = &fp
	if !m.vanished.IsZero() {
		m.s.log.Info("prepare for a target whose source domain is gone (a migration's end): fingerprinted through the mapping that still holds its pages",
			"source", m.file.spec, "gone_for", m.s.clk.Now().Sub(m.vanished))
		m.vanished = time.Time{}
	}
	tc := time.Now()
	if err := m.src.Close(); err != nil {
		m.s.log.Warn("closing memory source", "err", err)
	}
	m.src = nil
	m.s.log.Info("memory source released", "fingerprint_pages", len(fp.Pages), "fingerprint_took", fpTook, "release_took", time.Since(tc))
	m.s.setState(control.StateQuiesced, "prepare", &cur)
	m.s.status("quiesced at %#x for migration", cur)
	// Asynchronous: the spool's fsync must not add to the migration's downtime.
	m.s.emitAsync(alert.Health(m.s.clk.Now(), alert.SevMedium, "supervisor", "quiesced",
		fmt.Sprintf("monitoring of %s paused for migration (prepare)", m.s.currentTarget().Name)))
	return memReply{resp: control.Response{State: control.StateQuiesced, Cursor: (*control.Addr)(&cur)}}
}

// verifyGuest checks that src shows the guest fingerprinted at prepare. A Xen source
// (xen:DOMID, mapped from the frames the destination's grant listed) may hold a few
// frames fewer or more than at the source, so there the sampled pages present at both
// decide (memscan.Fingerprint.VerifyMigrated); elsewhere the layout must be the same.
// What a Xen source's frames and fingerprint showed is written to domainm/remap, as
// the lab's agent writes it (migrate --xen's Result.Remap).
func (m *memLoop) verifyGuest(spec string, src memscan.Source) error {
	if !strings.HasPrefix(spec, "xen:") {
		return m.fp.Verify(src)
	}
	change, fc, err := m.fp.VerifyMigrated(src)
	if r, ok := src.(interface{ Refused() uint64 }); ok {
		change.Refused = r.Refused() // frames of the destination's list Xen refused
	}
	m.s.log.Info("resume: xen frames", "change", change.String(), "fingerprint", fc.String())
	report := change.String()
	if cerr := change.Check(); cerr != nil {
		m.s.log.Warn("resume: the target's frame set changed beyond a migration; the fingerprint decides", "err", cerr)
		report = "BEYOND-MIGRATION " + cerr.Error()
	}
	m.s.writeRemap(report + "; fingerprint: " + fc.String())
	return err
}

// writeRemap writes what a resume of a xen: source remapped, or why it could not, to
// domainm/remap (before the answer, so that the coordinator reads it after).
func (s *Supervisor) writeRemap(v string) {
	if err := s.xen.write(xenNodeRemap, v); err != nil {
		s.log.Warn("cannot write domainm/remap", "err", err)
	}
}

// resume opens the new source and checks it shows the guest fingerprinted at prepare.
// It switches to it only if commit succeeds (the coordinator still waits for it).
func (m *memLoop) resume(a control.ResumeArgs, commit func() error) memReply {
	cur := m.cursor
	quiesced := control.Response{State: control.StateQuiesced, Cursor: (*control.Addr)(&cur)}
	if m.wait.waiting {
		return memReply{resp: control.Response{State: control.StateWaiting},
			err: control.Errorf(control.CodeWrongState, "resume while waiting for the memory source %s: not quiesced", m.file.spec)}
	}
	if m.src != nil {
		return memReply{resp: control.Response{State: control.StateMonitoring},
			err: control.Errorf(control.CodeWrongState, "resume while monitoring: prepare first")}
	}
	t := m.s.currentTarget()
	if a.Target.UUID != "" && t.UUID != "" && a.Target.UUID != t.UUID {
		return memReply{resp: quiesced, err: control.Errorf(control.CodeGuestChanged,
			"resume names target uuid %s, monitoring %s", a.Target.UUID, t.UUID)}
	}
	layout := a.Layout
	if layout == "" {
		layout = m.s.cfg.Target.Layout
	}
	m.s.setState(control.StateResuming, "resume", &cur)
	src, sf, err := m.s.openTracked(a.Source, layout)
	if err != nil {
		if strings.HasPrefix(a.Source, "xen:") {
			m.s.writeRemap(fmt.Sprintf("opening %s: %v", a.Source, err))
		}
		m.s.setState(control.StateQuiesced, "resume failed: cannot open source", &cur)
		return memReply{resp: quiesced, err: control.Errorf(control.CodeSource, "opening %s: %v", a.Source, err)}
	}
	if m.fp != nil && m.file.sameFile(sf) {
		// A resume at the source (the coordinator's rollback) on the very RAM file
		// fingerprinted at prepare is the same guest, whatever it wrote meanwhile: a
		// target QEMU restarts after a failed final copy and runs a few ms before it is
		// stopped again, and refusing it here left the target paused (CI at 836de66).
		m.s.log.Info("resume on the RAM file of prepare: the same guest, pages not compared", "source", a.Source)
	} else if m.fp != nil {
		if err := m.verifyGuest(a.Source, src); err != nil {
			src.Close()
			m.s.setState(control.StateQuiesced, "resume refused: "+err.Error(), &cur)
			code := control.CodeSource
			if errors.Is(err, memscan.ErrGuestChanged) {
				code = control.CodeGuestChanged
				m.s.emit(alert.Health(m.s.clk.Now(), alert.SevCritical, "memory-source", "guest-changed",
					fmt.Sprintf("resume refused: %s is not the guest %s fingerprinted at prepare: %v", a.Source, t.Name, err)))
			}
			return memReply{resp: quiesced, err: control.Errorf(code, "%s: %v", a.Source, err)}
		}
	}
	if err := commit(); err != nil {
		src.Close()
		m.s.setState(control.StateQuiesced, "resume refused: "+err.Error(), &cur)
		return memReply{resp: quiesced, err: err}
	}
	m.s.mu.Lock()
	if a.Target.Name != "" {
		m.s.target.Name = a.Target.Name
	}
	if a.Target.UUID != "" {
		m.s.target.UUID = a.Target.UUID
	}
	if a.Target.Host != "" {
		m.s.target.Host = a.Target.Host
	}
	if a.Target.DomID != 0 {
		m.s.target.DomID = a.Target.DomID
	}
	m.s.target.Source = a.Source
	m.s.mu.Unlock()
	if m.s.cfg.Target.Memory == XenGranted && sf.domid >= 0 {
		// The resume names the new domain explicitly; the config says to follow the
		// grant: a later reopen (the target destroyed and created again) reads
		// domainm/target again rather than waiting for this id.
		sf.spec, sf.granted = XenGranted, true
	}
	m.src, m.file, m.fp, m.gone = src, sf, nil, false
	m.mu.Lock()
	m.layout = layout
	m.mu.Unlock()
	// The guest behind the new source is derived again at its first pass: it may be
	// another kernel, or the same one relocated.
	m.guest.reset()
	m.guestAlerted = false
	m.setRunning(false, time.Time{})
	m.s.setState(control.StateMonitoring, "resume", &cur)
	nt := m.s.currentTarget()
	m.s.emitAsync(alert.Health(m.s.clk.Now(), alert.SevInfo, "supervisor", "resumed",
		fmt.Sprintf("monitoring of %s resumed on %s (%s)", nt.Name, firstNonEmpty(nt.Host, "this host"), nt.Source)))
	return memReply{resp: control.Response{State: control.StateMonitoring, Cursor: (*control.Addr)(&cur)}}
}

func (m *memLoop) setRunning(r bool, t time.Time) {
	m.mu.Lock()
	m.running, m.progress = r, t
	m.mu.Unlock()
}

func (m *memLoop) beat() {
	m.mu.Lock()
	m.progress = m.s.clk.Now()
	m.mu.Unlock()
}

// healthy is false when a pass has made no progress for the stall timeout.
func (m *memLoop) healthy() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.running || m.s.clk.Now().Sub(m.progress) < m.s.stallTimeout()
}

// do sends a command to the loop and waits for its reply. When ctx ends first (the
// request's deadline, or its requester left) the command is abandoned, unless the loop
// has committed it already: then its answer follows at once and is returned.
func (m *memLoop) do(ctx context.Context, c memCmd) (control.Response, error) {
	c.reply = make(chan memReply, 1)
	c.fence = &fence{ctx: ctx}
	select {
	case m.cmds <- c:
	case <-ctx.Done():
		return control.Response{State: m.s.currentState()}, control.Live(ctx)
	}
	select {
	case r := <-c.reply:
		return r.resp, r.err
	case <-ctx.Done():
		if c.fence.abandon() {
			return control.Response{State: m.s.currentState()}, control.Live(ctx)
		}
		r := <-c.reply
		return r.resp, r.err
	}
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
