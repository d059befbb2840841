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
	e := ruleEvent(now, t, file, line, msg, "info", "rule_warning")
	e.Event.Action = "rule-warning"
	e.Message = bound(fmt.Sprintf("rule warning: %s:%d: %s", file, line, msg))
	e.DomainM.FindingID = hashID("rules-warning", file, strconv.Itoa(line), msg)
	e.SetSeverity(SevMedium)
	e.Event.ID = occurrenceID(&e)
	return e
}
