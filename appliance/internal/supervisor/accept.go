package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
)

// BaselineAccepter is a DiskChecker that can take changes into its baseline: it
// re-reads the given paths from the image and writes their current state (or their
// absence) into the baseline, atomically. It returns the paths it took and those that
// did not differ from the baseline.
type BaselineAccepter interface {
	Accept(ctx context.Context, paths []string) (accepted, unchanged []string, err error)
}

// accepts remembers who accepted which paths, so that the end events of those
// findings say so (and are not taken for a restore).
type accepts struct {
	mu  sync.Mutex // serialises accepts; guards by
	by  map[string]string
	run sync.Mutex
}

// acceptBaseline carries out baseline-accept: the paths' current state goes into the
// baseline, an audit event says who accepted what and when, and a disk check runs at
// once, which ends the findings (file-change-ended, reason accepted).
func (s *Supervisor) acceptBaseline(ctx context.Context, raw json.RawMessage) (control.Response, error) {
	var a proto.BaselineAcceptArgs
	if err := json.Unmarshal(raw, &a); err != nil || len(a.Paths) == 0 {
		return control.Response{}, control.Errorf(control.CodeBadRequest, "baseline-accept args: want {\"paths\":[...]}: %v", err)
	}
	acc, ok := s.deps.Disk.(BaselineAccepter)
	if !ok || s.disk == nil {
		return control.Response{}, control.Errorf(control.CodeWrongState, "no disk checks configured (target.disk)")
	}
	by := a.By
	if by == "" {
		by = "the control channel"
	}
	s.live.accepts.run.Lock()
	defer s.live.accepts.run.Unlock()
	accepted, unchanged, err := acc.Accept(ctx, a.Paths)
	if err != nil {
		return control.Response{}, control.Errorf(control.CodeInternal, "baseline not changed: %v", err)
	}
	r := control.Response{State: s.currentState(), Accept: &proto.BaselineAcceptResult{Accepted: accepted, Unchanged: unchanged}}
	if r.Accept.Accepted == nil {
		r.Accept.Accepted = []string{}
	}
	if r.Accept.Unchanged == nil {
		r.Accept.Unchanged = []string{}
	}
	if len(accepted) == 0 {
		return r, nil
	}
	s.live.accepts.mu.Lock()
	if s.live.accepts.by == nil {
		s.live.accepts.by = map[string]string{}
	}
	for _, p := range accepted {
		s.live.accepts.by[p] = by
	}
	s.live.accepts.mu.Unlock()
	now := s.clk.Now()
	t := s.currentTarget()
	ev := alert.Health(now, alert.SevMedium, "baseline", "accepted",
		fmt.Sprintf("file-integrity baseline of %s changed by %s at %s: %d change(s) accepted: %s",
			t.Name, by, now.UTC().Format(time.RFC3339), len(accepted), strings.Join(accepted, ", ")))
	ev.Event.Category = []string{"configuration"}
	ev.Event.Type = []string{"change"}
	ev.DomainM.Meta = alert.MetaFields{"accepted_by": by, "paths": strings.Join(accepted, " "), "baseline": s.cfg.Target.Baseline}
	s.emit(ev)
	s.log.Info("baseline changes accepted", "by", by, "paths", strings.Join(accepted, ","))
	s.live.diskNow.Store(true)
	select {
	case s.live.diskWake <- struct{}{}:
	default:
	}
	return r, nil
}

// endedChanges builds the end events of integrity findings that were alerted and are
// no longer reported (keys: changeKey): restored, or accepted by an operator. A path
// the check still reports (changed again, differently, or left out by rule control)
// has not ended.
func (s *Supervisor) endedChanges(keys []string, current []detectors.Finding, now time.Time) []alert.Event {
	still := map[string]bool{}
	for _, f := range current {
		still[f.Path] = true
	}
	t := s.currentTarget()
	var evs []alert.Event
	s.live.accepts.mu.Lock()
	defer s.live.accepts.mu.Unlock()
	for _, k := range keys {
		parts := strings.Split(k, "\x00")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "integrity-") || still[parts[1]] {
			continue
		}
		kv := map[string]string{}
		for _, p := range parts[2:] {
			if name, v, ok := strings.Cut(p, "="); ok {
				kv[name] = v
			}
		}
		change := kv["change"]
		if change == "" {
			change = strings.TrimPrefix(parts[0], "integrity-")
		}
		how, by := alert.EndRestored, ""
		if who, ok := s.live.accepts.by[parts[1]]; ok {
			how, by = alert.EndAccepted, who
			delete(s.live.accepts.by, parts[1])
		}
		evs = append(evs, alert.IntegrityEnded(now, t, kv["selection"], change, parts[1], how, by))
	}
	return evs
}
