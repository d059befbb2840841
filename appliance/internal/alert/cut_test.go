package alert

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
)

// TestMemoryAlertSaysMatchesWereCut (issue 9 item 11): an alert for a memory finding
// whose matches the scanner cut says how many, and counts them in matches_total.
func TestMemoryAlertSaysMatchesWereCut(t *testing.T) {
	f := detectors.Finding{Detector: "yara-memory", Rule: "many", Namespace: "x", Time: time.Unix(0, 0),
		Matches: []detectors.StringMatch{{Name: "$a", Offset: 0x1000}, {Name: "$a", Offset: 0x2000}}, MatchesCut: 998, WindowDependent: true}
	b, err := json.Marshal(FromFinding(f, StateNew))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"matches_total":1000`, `"matches_cut":998`, `"window_dependent":true`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("alert lacks %s: %s", want, b)
		}
	}
}
