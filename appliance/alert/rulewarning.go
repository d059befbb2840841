package alert

import (
	"fmt"
	"strconv"
	"time"

	"github.com/domainm/domainm/detectors"
)

// RuleWarning is the alert for a compiler warning in a rule set that was loaded, such
// as libyara's "string may slow down scanning": file and line locate it. Severity
// medium: the rules run, but a slow rule can make memory passes overdue. Action
// "rule-warning".
func RuleWarning(now time.Time, t detectors.Target, file string, line int, msg string) Event {
	e := newEvent(now, "rules")
	e.Event.Kind = "event"
	e.Event.Category = []string{"configuration"}
	e.Event.Type = []string{"info"}
	e.Event.Action = "rule-warning"
	e.Error = &ErrorInfo{Message: bound(msg), Type: "rule_warning"}
	e.File = fileAt(file)
	e.DomainM.RuleFile = bound(file)
	e.DomainM.RuleLine = line
	e.DomainM.Target = targetOf(t)
	e.Message = bound(fmt.Sprintf("rule warning: %s:%d: %s", file, line, msg))
	e.DomainM.FindingID = hashID("rules-warning", file, strconv.Itoa(line), msg)
	e.SetSeverity(SevMedium)
	e.Event.ID = occurrenceID(&e)
	return e
}
