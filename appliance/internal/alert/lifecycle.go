package alert

import (
	"fmt"
	"strings"
	"time"

	"github.com/domainm/domainm/detectors"
)

// Finding states beyond new and gone.
const (
	// StateUpdated: a finding already reported matched content it had not reported
	// (a second attack caught by the same rule).
	StateUpdated = "updated"
	// StateRetired: a finding ended because its rule was removed or changed, not because
	// the content went away; event.reason says which.
	StateRetired = "retired"
)

// Reasons a finding is retired (event.reason of a StateRetired event).
const (
	ReasonRuleRemoved = "rule removed"
	ReasonRuleChanged = "rule changed"
)

// Updated is the alert for new content under a finding already reported: first is the
// finding as first reported (so the alert shares its domainm.finding_id), fresh the
// string matches it had not reported, now when they were seen. It carries the rule's
// severity: new matched content is as bad as the first. Action "<action>-updated".
func Updated(first detectors.Finding, now time.Time, fresh []detectors.StringMatch) Event {
	e := FromFinding(first, StateNew)
	e.Timestamp = now.UTC()
	e.DomainM.State = StateUpdated
	e.Event.Action += "-updated"
	e.Event.Type = []string{"indicator", "change"}
	memory := first.Path == ""
	e.DomainM.Matches, e.DomainM.MatchesN = matches(fresh, memory)
	where := "file " + first.Path
	if memory {
		where = "guest memory at " + memoryLocation(fresh) + heldBy(fresh)
	}
	e.Message = bound(fmt.Sprintf("YARA rule %s matched new content in %s%s: %s",
		qualified(first), where, onTarget(*e.DomainM.Target), preview(fresh)))
	e.Event.ID = occurrenceID(&e)
	return e
}

// Retired ends a finding whose rule is no longer loaded (ReasonRuleRemoved) or was
// changed and no longer matches (ReasonRuleChanged): the content may still be there,
// so it is not "gone". first is the finding as first reported (its finding id). Low
// severity, action "<action>-retired", event.reason the reason.
func Retired(first detectors.Finding, now time.Time, reason string) Event {
	e := FromFinding(first, StateGone)
	e.Timestamp = now.UTC()
	e.DomainM.State = StateRetired
	e.Event.Action = strings.TrimSuffix(e.Event.Action, "-gone") + "-retired"
	e.Event.Reason = bound(reason)
	what := "is no longer loaded"
	if reason == ReasonRuleChanged {
		what = "was changed and no longer matches"
	}
	e.Message = bound(fmt.Sprintf("%s: YARA rule %s %s; its finding on %s is closed, whether or not the content is still there",
		reason, qualified(first), what, firstNonEmpty(e.DomainM.Target.Name, e.DomainM.Target.UUID, "the target")))
	e.Event.ID = occurrenceID(&e)
	return e
}

// preview quotes the first fresh match for the message: its text when printable, else
// its hex, bounded.
func preview(ms []detectors.StringMatch) string {
	if len(ms) == 0 {
		return "(no string)"
	}
	m := ms[0]
	v := m.Text
	if v == "" {
		v = "hex " + m.Hex
	}
	s := fmt.Sprintf("%s %q", m.Name, v)
	if len(ms) > 1 {
		s += fmt.Sprintf(" and %d more", len(ms)-1)
	}
	return s
}
