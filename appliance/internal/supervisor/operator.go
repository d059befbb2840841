package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/integrity"
)

var _ control.Operator = (*Supervisor)(nil)

// sinkStatuser is the dispatcher's view of its sinks (status).
type sinkStatuser interface {
	Status() []alert.SinkStatus
	Oldest(sink string) time.Time
	HeldBack(sink string) int
}

// testSender sends a test alert through every sink (alert-test).
type testSender interface {
	SendTest(ctx context.Context, ev alert.Event) ([]alert.TestResult, error)
}

// Operate answers the operator commands of the control channel.
func (s *Supervisor) Operate(ctx context.Context, cmd string, args json.RawMessage) (control.Response, error) {
	switch cmd {
	case proto.CmdAlertTest:
		return s.alertTest(ctx, args)
	case proto.CmdBaselineAccept:
		return s.acceptBaseline(ctx, args)
	}
	return control.Response{}, control.Errorf(control.CodeUnknownCommand,
		"unknown cmd %q (want status, prepare, resume, %s or %s)", cmd, proto.CmdAlertTest, proto.CmdBaselineAccept)
}

// alertTest sends one test event through every sink and waits for each to deliver it.
func (s *Supervisor) alertTest(ctx context.Context, raw json.RawMessage) (control.Response, error) {
	var a proto.AlertTestArgs
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &a); err != nil {
			return control.Response{}, control.Errorf(control.CodeBadRequest, "alert-test args: %v", err)
		}
	}
	sev := alert.SevHigh
	if a.Severity != "" {
		var err error
		if sev, err = alert.ParseSeverity(a.Severity); err != nil {
			return control.Response{}, control.Errorf(control.CodeBadRequest, "alert-test args: severity: %v", err)
		}
	}
	ts, ok := s.deps.Alerts.(testSender)
	if !ok {
		return control.Response{}, control.Errorf(control.CodeInternal, "the alert emitter cannot send test alerts")
	}
	wait := time.Duration(a.WaitMs) * time.Millisecond
	if wait <= 0 {
		wait = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	by := a.By
	if by == "" {
		by = "the control channel"
	}
	ev := alert.TestEvent(s.clk.Now(), sev, by)
	s.named(&ev)
	res, err := ts.SendTest(ctx, ev)
	if err != nil {
		return control.Response{}, control.Errorf(control.CodeInternal, "test alert not accepted: %v", err)
	}
	s.log.Info("test alert sent", "by", by, "severity", sev.String(), "event_id", ev.Event.ID)
	r := control.Response{State: s.currentState()}
	for _, x := range res {
		r.AlertTest = append(r.AlertTest, proto.SinkTest{Sink: x.Sink, Type: x.Type, Delivered: x.Delivered,
			Skipped: x.Skipped, Error: x.Error, Seconds: x.Seconds, EventID: ev.Event.ID})
	}
	return r, nil
}

// SetStatusExtra lets the daemon's wiring add what only it knows to status (version,
// start time, configuration reloads). Call before Run.
func (s *Supervisor) SetStatusExtra(f func(*proto.StatusDetail)) { s.live.statusExtra.Store(&f) }

// statusDetail is what domainm status prints.
func (s *Supervisor) statusDetail() *proto.StatusDetail {
	now := s.clk.Now()
	d := &proto.StatusDetail{Sinks: []proto.SinkStatus{}}
	d.Memory.Source, d.Memory.Layout = s.currentTarget().Source, s.cfg.Target.Layout
	d.Memory.IntervalSeconds = s.memInterval().Seconds()
	if m := s.mem; m != nil {
		m.mu.Lock()
		d.Memory.Layout = m.layout
		d.Memory.Passes, d.Memory.Findings = m.passes, m.findings
		d.Memory.LastPassEnd = rfc3339(m.lastPass)
		d.Memory.LastPassSeconds = m.lastTook.Seconds()
		st := m.stats
		d.Memory.LastPassComplete = st.Complete
		d.Memory.Blocks, d.Memory.BlocksScanned = st.Blocks, st.BlocksScanned
		d.Memory.BlocksUnchanged, d.Memory.BlocksZero = st.BlocksUnchanged, st.BlocksZero
		d.Memory.BlocksUnscanned = len(st.Errors)
		if u := m.health.unscanned; u != nil {
			d.Memory.BytesUnscanned = u.Bytes
		}
		m.mu.Unlock()
		d.Memory.Guest = m.guest.status()
	}
	d.Rules = s.rulesStatus()
	d.Disk = s.diskStatus(now)
	if ss, ok := s.deps.Alerts.(sinkStatuser); ok {
		for _, x := range ss.Status() {
			st := proto.SinkStatus{Name: x.Name, Type: x.Type, Up: x.Up, Spooled: x.Spooled, SpoolBytes: x.Bytes,
				LastError: x.LastError, LastDelivered: rfc3339(x.LastOK)}
			st.HeldBack = ss.HeldBack(x.Name)
			if t := ss.Oldest(x.Name); !t.IsZero() {
				st.OldestAgeSeconds = now.Sub(t).Seconds()
			}
			d.Sinks = append(d.Sinks, st)
		}
	}
	if f := s.live.statusExtra.Load(); f != nil {
		(*f)(d)
	}
	return d
}

func (s *Supervisor) rulesStatus() proto.RulesStatus {
	r := proto.RulesStatus{Dir: s.cfg.Rules.Dir, BrokenFiles: []string{}, Disabled: []string{}, Exceptions: []string{}}
	rc := s.ruleCtl()
	r.Disabled = append(r.Disabled, rc.disable...)
	for _, e := range rc.exceptions {
		r.Exceptions = append(r.Exceptions, e.String())
	}
	r.SuppressedMemory, r.SuppressedDisk = int(rc.memSuppressed.Load()), int(rc.diskSuppressed.Load())
	h := s.rules
	if h == nil {
		return r
	}
	if l := h.cur.Load(); l != nil {
		r.Count, r.Files, r.ID, r.Loaded = l.rules.Count(), len(l.rules.Files()), l.rules.ID(), rfc3339(l.at)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r.Reloads, r.FailedReloads = h.reloads, h.failed
	r.LastReload, r.LastReloadResult = rfc3339(h.lastReload), h.lastResult
	for _, name := range slices.Sorted(maps.Keys(h.broken)) {
		for _, e := range h.broken[name].errs {
			r.BrokenFiles = append(r.BrokenFiles, fmt.Sprintf("%s:%d: %s", name, e.Line, e.Text))
		}
	}
	return r
}

func (s *Supervisor) diskStatus(now time.Time) proto.DiskStatus {
	d := proto.DiskStatus{Image: s.cfg.Target.Disk, IntervalSeconds: s.diskInterval().Seconds(),
		Baseline: s.cfg.Target.Baseline, BaselineAgeSeconds: -1}
	if s.cfg.Target.Disk == "" {
		d.IntervalSeconds = 0
	}
	if fi, err := os.Stat(s.cfg.Target.Baseline); err == nil && s.cfg.Target.Baseline != "" {
		d.BaselineAgeSeconds = now.Sub(fi.ModTime()).Seconds()
	}
	if l := s.disk; l != nil {
		l.mu.Lock()
		d.Checks, d.LastCheck, d.Failing = l.checks, rfc3339(l.last), l.failing
		l.mu.Unlock()
	}
	return d
}

// tally is the reload counters, to tell what a reload did (noteReload).
func (h *ruleHolder) tally() [2]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return [2]int{h.reloads, h.failed}
}

// noteReload records a reload attempt that started at t, given the counters before it.
func (h *ruleHolder) noteReload(t time.Time, before [2]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastReload = t
	if h.failed > before[1] {
		h.s.m.reloadOK.Set(0)
	} else {
		h.s.m.reloadOK.Set(1)
		h.s.m.reloadOKAt.Set(float64(t.UnixNano()) / 1e9)
	}
	switch {
	case h.failed > before[1]:
		h.lastResult = "failed"
	case h.emptyDir:
		h.lastResult = "empty"
	case len(h.broken) > 0:
		h.lastResult = "partial"
	case h.reloads > before[0]:
		h.lastResult = "ok"
	default:
		h.lastResult = "unchanged"
	}
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// diskChange counts a disk change that is alerted.
func (m *metrics) diskChange(f detectors.Finding) {
	switch {
	case f.Detector == integrity.Detector && f.Change != "":
		m.diskChanges.WithLabelValues(f.Change).Inc()
	case f.Detector == "yara-file":
		m.diskChanges.WithLabelValues("file-match").Inc()
	}
}
