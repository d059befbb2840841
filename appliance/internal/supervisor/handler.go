package supervisor

import (
	"context"
	"time"

	"github.com/domainm/domainm/appliance/control"
)

var _ control.Handler = (*Supervisor)(nil)

// Status reports the supervisor's state and health (control channel); state and
// health come from one look at the health model.
func (s *Supervisor) Status(context.Context) control.Response {
	t := s.currentTarget()
	h := s.health()
	r := control.Response{
		State:  h.state,
		Target: &control.TargetInfo{Name: t.Name, UUID: t.UUID, Host: t.Host, DomID: t.DomID},
		Source: t.Source,
		Health: &control.Health{Healthy: h.healthy(), Reason: h.reason, Problems: h.problems, Unscanned: h.unscanned},
	}
	if !h.since.IsZero() {
		r.Health.Since = h.since.UTC().Format(time.RFC3339Nano)
	}
	if s.rules != nil && s.rules.cur.Load() != nil {
		r.Rules, r.RuleCount = s.rules.id(), s.rules.count()
	}
	if m := s.mem; m != nil {
		m.mu.Lock()
		r.Passes, r.Findings, r.Epoch = m.passes, m.findings, m.epoch
		if !m.lastPass.IsZero() {
			r.LastPass = m.lastPass.UTC().Format(time.RFC3339Nano)
		}
		m.mu.Unlock()
	}
	if d := s.disk; d != nil {
		d.mu.Lock()
		r.DiskChecks = d.checks
		d.mu.Unlock()
	}
	r.Detail = s.statusDetail()
	return r
}

// Prepare finishes the block in flight, records the cursor and page fingerprints and
// releases the memory source (control channel).
func (s *Supervisor) Prepare(ctx context.Context) (control.Response, error) {
	if s.mem == nil {
		return control.Response{State: s.currentState()}, control.Errorf(control.CodeWrongState, "not started yet")
	}
	return s.mem.do(ctx, memCmd{prepare: true})
}

// Resume opens the new memory source, verifies the fingerprints and continues from
// the cursor (control channel).
func (s *Supervisor) Resume(ctx context.Context, a control.ResumeArgs) (control.Response, error) {
	if s.mem == nil {
		return control.Response{State: s.currentState()}, control.Errorf(control.CodeWrongState, "not started yet")
	}
	return s.mem.do(ctx, memCmd{resume: a})
}
