package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/memscan"
)

// The health model: one function, health, says what the supervisor is doing (its
// state) and what keeps it from watching the whole target with rules (its problems).
// Status and /healthz call it when asked; publish writes what it says to the state log,
// the metrics and systemd's STATUS whenever the state or the set of problems changes
// (at once for changes the supervisor makes, within healthEvery for conditions that
// come with time: a stalled pass, an overdue disk check, undelivered alerts). So the
// four never disagree for longer than that.

// healthEvery is how often time-based conditions are looked at.
const healthEvery = time.Second

// healthReport is the model at one moment.
type healthReport struct {
	state, reason string
	since         time.Time
	problems      []control.Problem // sorted by code
	unscanned     *control.Unscanned
}

func (r healthReport) healthy() bool { return len(r.problems) == 0 }

func (r healthReport) codes() []string {
	out := make([]string, 0, len(r.problems))
	for _, p := range r.problems {
		out = append(out, p.Code)
	}
	return out
}

// err is nil when healthy, else names every problem.
func (r healthReport) err() error {
	if r.healthy() {
		return nil
	}
	var errs []error
	for _, p := range r.problems {
		errs = append(errs, fmt.Errorf("%s: %s", p.Code, p.Message))
	}
	return errors.Join(errs...)
}

// health takes the model now.
func (s *Supervisor) health() healthReport {
	now := s.clk.Now()
	s.mu.Lock()
	r := healthReport{state: s.state, reason: s.reason, since: s.stateSince}
	alertsErr := s.alertsErr
	since := make(map[string]time.Time, len(s.problemSince))
	for k, v := range s.problemSince {
		since[k] = v
	}
	s.mu.Unlock()
	add := func(code, msg string) {
		p := control.Problem{Code: code, Message: msg}
		if t, ok := since[code]; ok {
			p.Since = t.UTC().Format(time.RFC3339Nano)
		}
		r.problems = append(r.problems, p)
	}
	if r.state != control.StateMonitoring {
		add(control.ProblemNotMonitored, strings.TrimSuffix(r.state+": "+r.reason, ": "))
	}
	if code, msg := sourceProblem(r); code != "" {
		add(code, msg)
	}
	if s.rules != nil && s.rules.cur.Load() != nil {
		// An emptied folder (the last good set keeps running) or a set without rules is
		// one problem; rule files that do not compile are another.
		empty, broken := s.rules.problems()
		if empty != "" {
			add(control.ProblemRulesEmpty, empty)
		}
		if broken != "" {
			add(control.ProblemRulesBroken, broken)
		}
	}
	if m := s.mem; m != nil {
		m.mu.Lock()
		failErr, u := m.health.failErr, m.health.unscanned
		stalled := m.running && now.Sub(m.progress) >= s.stallTimeout()
		m.mu.Unlock()
		r.unscanned = u
		switch {
		case failErr != "":
			add(control.ProblemPassFailed, failErr)
		case u != nil:
			add(control.ProblemBlindSpots, fmt.Sprintf("the last memory pass left %s in %d blocks unscanned (%s)",
				sizeText(u.Bytes), u.Blocks, reasonsText(u.Reasons)))
		}
		if stalled {
			add(control.ProblemStalled, fmt.Sprintf("the memory pass made no progress for %v (memory.stall_timeout)", s.stallTimeout()))
		}
	}
	if d := s.disk; d != nil {
		d.mu.Lock()
		failing := d.failing
		overdue := d.running && now.Sub(d.started) >= s.diskInterval()+s.stallTimeout()
		d.mu.Unlock()
		if failing {
			add(control.ProblemDiskFailed, fmt.Sprintf("the last check of %s failed (see the disk-check-failed alert)", s.cfg.Target.Disk))
		}
		if code, msg := d.storageProblem(); code != "" {
			add(code, msg)
		}
		if overdue {
			add(control.ProblemDiskOverdue, fmt.Sprintf("a check of %s has run for longer than disk.interval plus memory.stall_timeout", s.cfg.Target.Disk))
		}
	}
	if alertsErr != nil {
		add(control.ProblemAlertsStuck, alertsErr.Error())
	}
	sort.Slice(r.problems, func(i, j int) bool { return r.problems[i].Code < r.problems[j].Code })
	return r
}

// Healthy returns nil when the supervisor monitors the target with no problem, else an
// error naming each problem (what /healthz shows).
func (s *Supervisor) Healthy() error { return s.health().err() }

// publish writes the model to the state log, the metrics and systemd's STATUS when the
// state or the set of problems differs from what was published last, or always with
// force (a state change: its line carries reason and cursor).
func (s *Supervisor) publish(force bool, reason string, cursor *uint64) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	r := s.health()
	codes := r.codes()
	key := r.state + "|" + strings.Join(codes, ",")
	if !force && key == s.pubKey {
		return
	}
	if !force {
		reason = "health: " + diffCodes(s.pubCodes, codes)
	}
	now := s.clk.Now()
	s.mu.Lock()
	kept := map[string]time.Time{}
	for _, c := range codes {
		if t, ok := s.problemSince[c]; ok {
			kept[c] = t
		} else {
			kept[c] = now
		}
	}
	s.problemSince = kept
	s.pubKey, s.pubCodes = key, codes
	t := s.target
	s.mu.Unlock()

	s.hm.set(r)
	if s.m != nil {
		s.m.up.Set(b2f(r.state == control.StateMonitoring))
	}
	rec := control.StateRecord{State: r.state, Reason: reason, Source: t.Source, Cursor: (*control.Addr)(cursor), Host: t.Host,
		Healthy: r.healthy(), Problems: codes}
	if s.states != nil {
		if err := s.states.write(time.Now(), rec); err != nil {
			s.log.Error("writing state log", "err", err)
		}
	}
	s.log.Info("state", "state", r.state, "reason", reason, "healthy", r.healthy(), "problems", strings.Join(codes, ","))
	s.deps.Notify("STATUS=" + s.statusText(r))
}

// statusText is the one-line STATUS for systemd.
func (s *Supervisor) statusText(r healthReport) string {
	name := s.currentTarget().Name
	switch {
	case r.state == control.StateWaiting:
		return fmt.Sprintf("waiting for the target %s: %s", name, r.reason)
	case r.healthy():
		n := 0
		if s.rules != nil && s.rules.cur.Load() != nil {
			n = s.rules.count()
		}
		return fmt.Sprintf("monitoring %s (%d rules)", name, n)
	}
	var ps []string
	for _, p := range r.problems {
		if p.Code != control.ProblemNotMonitored {
			ps = append(ps, p.Code)
		}
	}
	if len(ps) == 0 {
		return fmt.Sprintf("%s %s", r.state, name)
	}
	return fmt.Sprintf("%s %s, unhealthy: %s", r.state, name, strings.Join(ps, ", "))
}

// diffCodes says which problems appeared (+) and went (-).
func diffCodes(old, cur []string) string {
	in := func(l []string, c string) bool {
		for _, x := range l {
			if x == c {
				return true
			}
		}
		return false
	}
	var parts []string
	for _, c := range cur {
		if !in(old, c) {
			parts = append(parts, "+"+c)
		}
	}
	for _, c := range old {
		if !in(cur, c) {
			parts = append(parts, "-"+c)
		}
	}
	return strings.Join(parts, " ")
}

// watchHealth looks at the time-based conditions every healthEvery and publishes
// changes. The alert sinks' health is taken here (not on status calls, which sit on
// the migration's critical path).
func (s *Supervisor) watchHealth(ctx context.Context) {
	for {
		if s.deps.AlertsHealthy != nil {
			err := s.deps.AlertsHealthy()
			s.mu.Lock()
			s.alertsErr = err
			s.mu.Unlock()
		}
		s.publish(false, "", nil)
		select {
		case <-ctx.Done():
			return
		case <-time.After(healthEvery):
		}
	}
}

// healthMetrics are the series the health model drives.
type healthMetrics struct {
	healthy         prometheus.Gauge
	problems        *prometheus.GaugeVec // by problem code
	state           *prometheus.GaugeVec // 1 for the current state
	unscannedBytes  prometheus.Gauge
	unscannedBlocks *prometheus.GaugeVec // by reason
}

var allStates = []string{control.StateStarting, control.StateWaiting, control.StateMonitoring, control.StateQuiescing,
	control.StateQuiesced, control.StateResuming, control.StateStopping, control.StateStopped}

var blockReasons = []string{memscan.ReasonTimeout, memscan.ReasonUnreadable, memscan.ReasonScanError}

func newHealthMetrics(reg prometheus.Registerer) (*healthMetrics, error) {
	hm := &healthMetrics{
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_healthy",
			Help: "1 while the supervisor monitors the target with no health problem (what /healthz says), 0 otherwise."}),
		problems: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "domainm_health_problem",
			Help: "1 while the health problem is present (the codes of domainm status), 0 otherwise."}, []string{"problem"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "domainm_state",
			Help: "1 for the supervisor's current state (starting, waiting, monitoring, quiesced, ...), 0 for the others."}, []string{"state"}),
		unscannedBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_memory_unscanned_bytes",
			Help: "Guest memory the last memory pass could not scan (its blind spots)."}),
		unscannedBlocks: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "domainm_memory_unscanned_blocks",
			Help: "Blocks the last memory pass could not scan, by reason: timeout, unreadable, scan-error."}, []string{"reason"}),
	}
	for _, c := range control.ProblemCodes {
		hm.problems.WithLabelValues(c)
	}
	for _, st := range allStates {
		hm.state.WithLabelValues(st)
	}
	for _, r := range blockReasons {
		hm.unscannedBlocks.WithLabelValues(r)
	}
	if reg == nil {
		return hm, nil
	}
	for _, c := range []prometheus.Collector{hm.healthy, hm.problems, hm.state, hm.unscannedBytes, hm.unscannedBlocks} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return hm, nil
}

func (hm *healthMetrics) set(r healthReport) {
	hm.healthy.Set(b2f(r.healthy()))
	present := map[string]bool{}
	for _, p := range r.problems {
		present[p.Code] = true
	}
	for _, c := range control.ProblemCodes {
		hm.problems.WithLabelValues(c).Set(b2f(present[c]))
	}
	for _, st := range allStates {
		hm.state.WithLabelValues(st).Set(b2f(st == r.state))
	}
	var bytes uint64
	var by map[string]int
	if u := r.unscanned; u != nil {
		bytes, by = u.Bytes, u.Reasons
	}
	hm.unscannedBytes.Set(float64(bytes))
	for _, reason := range blockReasons {
		hm.unscannedBlocks.WithLabelValues(reason).Set(float64(by[reason]))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
