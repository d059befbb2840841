package alert

import (
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
)

func shellFinding() detectors.Finding {
	f := detectors.Finding{Detector: "yara-memory", Rule: "linux_reverse_shell_tools", Namespace: "linux_reverse_shell",
		Time: goldenTime, Target: goldenTarget, Meta: map[string]string{"severity": "high"}}
	nc := detectors.StringMatch{Name: "$nc1", Offset: 0x100123, Length: 13}
	nc.SetData([]byte("nc -e /bin/sh"))
	f.Matches = []detectors.StringMatch{nc}
	return f
}

// TestUpdated: new content under a known finding shares its finding id, keeps the rule's
// severity and names only the new matches.
func TestUpdated(t *testing.T) {
	first := shellFinding()
	socat := detectors.StringMatch{Name: "$socat", Offset: 0x200456, Length: 31}
	socat.SetData([]byte("socat tcp:203.0.113.9:443 exec:"))
	at := goldenTime.Add(time.Minute)
	e := Updated(first, at, []detectors.StringMatch{socat})
	n := FromFinding(first, StateNew)
	if e.DomainM.FindingID != n.DomainM.FindingID || e.Event.ID == n.Event.ID {
		t.Errorf("finding id %s (new: %s), event id %s (new: %s): want the same finding, another event", e.DomainM.FindingID, n.DomainM.FindingID, e.Event.ID, n.Event.ID)
	}
	if e.Event.Action != "memory-match-updated" || e.DomainM.State != StateUpdated || e.Severity() != SevHigh || !e.Timestamp.Equal(at) {
		t.Errorf("action %s state %s severity %v time %v", e.Event.Action, e.DomainM.State, e.Severity(), e.Timestamp)
	}
	if len(e.DomainM.Matches) != 1 || e.DomainM.Matches[0].Address != "0x200456" || e.DomainM.MatchesN != 1 {
		t.Errorf("matches %+v", e.DomainM.Matches)
	}
	if !strings.Contains(e.Message, `$socat "socat tcp:203.0.113.9:443 exec:"`) || !strings.Contains(e.Message, "0x200456") {
		t.Errorf("message %q", e.Message)
	}
}

// TestRetired: a finding ended by its rule's removal says so, with its finding id, and is
// not "gone".
func TestRetired(t *testing.T) {
	first := shellFinding()
	n := FromFinding(first, StateNew)
	for _, reason := range []string{ReasonRuleRemoved, ReasonRuleChanged} {
		e := Retired(first, goldenTime.Add(time.Hour), reason)
		if e.DomainM.FindingID != n.DomainM.FindingID || e.Event.Action != "memory-match-retired" || e.Event.Reason != reason ||
			e.DomainM.State != StateRetired || e.Severity() != SevLow {
			t.Errorf("%s: id %s action %s reason %q state %s severity %v", reason, e.DomainM.FindingID, e.Event.Action, e.Event.Reason, e.DomainM.State, e.Severity())
		}
		if strings.Contains(e.Message, "no longer present") || !strings.HasPrefix(e.Message, reason+": ") || !strings.Contains(e.Message, "web1") {
			t.Errorf("%s: message %q", reason, e.Message)
		}
		if e.Event.Type[1] != "end" {
			t.Errorf("%s: type %v, want an end", reason, e.Event.Type)
		}
	}
}

// TestRuleWarning: a compiler warning names file and line, at medium severity.
func TestRuleWarning(t *testing.T) {
	e := RuleWarning(goldenTime, goldenTarget, "/etc/domainm/rules/slow.yar", 3, `string "$a" may slow down scanning`)
	if e.Event.Action != "rule-warning" || e.DomainM.RuleFile != "/etc/domainm/rules/slow.yar" || e.DomainM.RuleLine != 3 ||
		e.Severity() != SevMedium || e.DomainM.Target == nil || e.DomainM.Target.Name != "web1" {
		t.Errorf("rule warning: %+v", e)
	}
	if e.Message != `rule warning: /etc/domainm/rules/slow.yar:3: string "$a" may slow down scanning` {
		t.Errorf("message %q", e.Message)
	}
}
