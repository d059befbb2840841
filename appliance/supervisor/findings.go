package supervisor

import (
	"sort"

	"github.com/domainm/domainm/detectors"
)

// tracker turns the findings of successive passes into changes: a finding is reported
// when it first appears and when it is gone, never again while it stays.
//
// A memory finding is keyed by detector, namespace and rule, not by address: guest
// pages move (page cache, compaction), and an address-keyed finding would flap between
// "gone" and "new" without anything having changed. The "gone" report carries the
// finding as it was first reported, so both share one alert finding id.
type tracker struct {
	known map[string]detectors.Finding
}

func newTracker() *tracker { return &tracker{known: map[string]detectors.Finding{}} }

func findingKey(f detectors.Finding) string {
	return f.Detector + "\x00" + f.Namespace + "\x00" + f.Rule + "\x00" + f.Path
}

// update records the findings of a pass. New findings are returned in added; when
// complete (the pass covered all memory) the known findings absent from fs are
// returned in gone and forgotten. An incomplete pass can only add.
func (t *tracker) update(fs []detectors.Finding, complete bool) (added, gone []detectors.Finding) {
	seen := make(map[string]bool, len(fs))
	for _, f := range fs {
		k := findingKey(f)
		seen[k] = true
		if _, ok := t.known[k]; !ok {
			t.known[k] = f
			added = append(added, f)
		}
	}
	if complete {
		for k, f := range t.known {
			if !seen[k] {
				gone = append(gone, f)
				delete(t.known, k)
			}
		}
		sort.Slice(gone, func(i, j int) bool { return findingKey(gone[i]) < findingKey(gone[j]) })
	}
	return added, gone
}

func (t *tracker) len() int { return len(t.known) }

// mergeFindings adds to acc the findings of fs whose key acc lacks (used to join the
// parts of a pass that a prepare/resume split).
func mergeFindings(acc map[string]detectors.Finding, fs []detectors.Finding) {
	for _, f := range fs {
		if _, ok := acc[findingKey(f)]; !ok {
			acc[findingKey(f)] = f
		}
	}
}
