package supervisor

import (
	"path"
	"strings"
	"sync/atomic"

	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/detectors"
)

// ruleControl switches rules off and allows findings (rules.disable, rules.exception)
// without touching the rule files: a finding it matches is neither alerted nor kept,
// so an open finding whose rule is switched off ends as gone at the next complete
// pass, and one allowed again is alerted again.
type ruleControl struct {
	disable    []string
	exceptions []config.RuleException
	// suppressed counts the findings left out by the last memory pass and disk check.
	memSuppressed, diskSuppressed atomic.Int64
}

func newRuleControl(r config.Rules) *ruleControl {
	return &ruleControl{disable: r.Disable, exceptions: r.Exceptions}
}

// ruleNameMatches reports whether pattern (a name, "namespace:name", or a glob over
// either) names the finding's rule.
func ruleNameMatches(pattern string, f detectors.Finding) bool {
	for _, n := range []string{f.Rule, f.Namespace + ":" + f.Rule} {
		if ok, _ := path.Match(pattern, n); ok || pattern == n {
			return true
		}
	}
	return false
}

// suppressed says whether f is switched off or allowed on target t.
func (rc *ruleControl) suppressed(f detectors.Finding, t detectors.Target) bool {
	for _, d := range rc.disable {
		if tag, ok := strings.CutPrefix(d, "tag:"); ok {
			for _, ft := range f.Tags {
				if strings.EqualFold(ft, tag) {
					return true
				}
			}
		} else if ruleNameMatches(d, f) {
			return true
		}
	}
	for _, e := range rc.exceptions {
		if !ruleNameMatches(e.Rule, f) {
			continue
		}
		if e.Target != "" && e.Target != t.Name && e.Target != t.UUID {
			continue
		}
		if e.Path != "" {
			if ok, _ := path.Match(e.Path, f.Path); !ok {
				continue
			}
		}
		return true
	}
	return false
}

// control is the rule control in force (the configuration's, or the last reload's).
func (s *Supervisor) ruleCtl() *ruleControl {
	if rc := s.live.rules.Load(); rc != nil {
		return rc
	}
	rc := newRuleControl(s.cfg.Rules)
	if s.live.rules.CompareAndSwap(nil, rc) {
		return rc
	}
	return s.live.rules.Load()
}

// suppress drops the findings rule control switches off or allows, and counts them
// for status (disk: the disk check's, else the memory pass's).
func (s *Supervisor) suppress(fs []detectors.Finding, disk bool) []detectors.Finding {
	rc := s.ruleCtl()
	t := s.currentTarget()
	out := fs[:0:0]
	for _, f := range fs {
		if !rc.suppressed(f, t) {
			out = append(out, f)
		}
	}
	n := int64(len(fs) - len(out))
	if disk {
		rc.diskSuppressed.Store(n)
	} else {
		rc.memSuppressed.Store(n)
	}
	if n > 0 {
		s.log.Debug("findings left out by rules.disable and rules.exception", "count", n, "disk", disk)
	}
	return out
}
