package alert

import (
	"fmt"
	"time"

	"github.com/domainm/domainm/detectors"
)

// How a file-integrity finding ended.
const (
	EndRestored = "restored" // the entry is as in the baseline again
	EndAccepted = "accepted" // an operator took the change into the baseline
)

// IntegrityEnded is the end event of a file-integrity finding (file-change-ended):
// the entry at path, reported as change ("added", "changed", "removed") under the
// policy selection, no longer differs from the baseline, because it was restored or
// because an operator (by) accepted it into the baseline. Its domainm.finding_id is
// the finding's own, so a SIEM pairs it with the file-added/-changed/-removed alert.
func IntegrityEnded(now time.Time, t detectors.Target, selection, change, path, how, by string) Event {
	e := newEvent(now, "integrity")
	e.Event.Kind = "alert"
	e.Event.Category = []string{"file", "intrusion_detection"}
	e.Event.Type = []string{"end"}
	e.Event.Action = "file-change-ended"
	e.Event.Reason = how
	e.DomainM.State = "ended"
	e.DomainM.Target = targetOf(t)
	if t.Name != "" || t.UUID != "" {
		e.Host = &Host{Name: bound(t.Name), ID: bound(t.UUID), Type: "vm"}
	}
	e.File = fileAt(path)
	e.Rule = &Rule{Name: "integrity-" + change, Ruleset: bound(selection)}
	what := "is as in the baseline again"
	if how == EndAccepted {
		what = "was accepted into the baseline by " + by
	}
	e.Message = bound(fmt.Sprintf("file change ended: %s %s (was %s)%s", path, what, change, onTarget(*e.DomainM.Target)))
	if how == EndAccepted {
		e.DomainM.Meta = MetaFields{"accepted_by": bound(by)}
	}
	e.DomainM.FindingID = FindingID("integrity", bound(selection), "integrity", t, path+"\x00"+change)
	e.SetSeverity(SevLow)
	e.Event.ID = occurrenceID(&e)
	return e
}
