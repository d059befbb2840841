package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// A memory finding is one rule (detector, namespace, rule) on one target, wherever in
// memory it matches: guest pages move (page cache, compaction), and an address-keyed
// finding would flap between "gone" and "new" without anything having changed.
//
// Its content is the set of distinct matched strings it has reported, each identified
// by string name, match length and matched bytes (the first detectors.MaxMatchData of
// them), hashed (contentKey). A pass that matches content the finding has not reported
// yields an update naming only that content: a second attack caught by the same rule
// alerts, while the same bytes copied or moved in RAM do not. Content is remembered
// until the finding ends, at most maxContent keys per finding.
//
// A finding ends as gone when a complete pass with an unchanged rule set no longer
// matches its rule, and as retired when its rule is no longer loaded or was changed
// and no longer matches (the content may still be there).

// maxContent bounds the content keys a finding remembers; beyond it, new content of
// that finding is no longer alerted (memory-finding-content-full says so, once).
const maxContent = 256

// tracked is one finding the supervisor has reported.
type tracked struct {
	first    detectors.Finding // as first reported: updated, gone and retired carry its finding id
	content  map[string]bool   // contentKey of every string match reported
	ruleHash string            // hash of the rule's file when the finding last matched
	changed  bool              // its rule's file changed since it last matched
}

// update is new content of a known finding.
type update struct {
	first detectors.Finding
	fresh []detectors.StringMatch
	full  bool // the finding's content reached maxContent with this update
}

// ending is a finding that ended otherwise than gone.
type ending struct {
	first  detectors.Finding
	reason string
}

// changes is what a pass or a rule reload changed.
type changes struct {
	added   []detectors.Finding
	updated []update
	gone    []detectors.Finding
	retired []ending
	dirty   bool // state to save changed (also when nothing is alerted)
}

// tracker turns the findings of successive passes into changes: a finding is reported
// when it first appears, when it matches new content and when it ends, never again
// while it stays as it is.
type tracker struct {
	known map[string]*tracked
}

func newTracker() *tracker { return &tracker{known: map[string]*tracked{}} }

func findingKey(f detectors.Finding) string {
	return f.Detector + "\x00" + f.Namespace + "\x00" + f.Rule + "\x00" + f.Path
}

func ruleOf(f detectors.Finding) yara.RuleName {
	return yara.RuleName{Namespace: f.Namespace, Rule: f.Rule}
}

// contentKey identifies a matched string by name, length and (bounded) bytes.
func contentKey(s detectors.StringMatch) string {
	data := s.Hex
	if data == "" && len(s.Data) > 0 {
		data = hex.EncodeToString(s.Data)
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%d:%s;%d;%s", len(s.Name), s.Name, s.Length, data))
	return hex.EncodeToString(h[:12])
}

func newTracked(f detectors.Finding, ruleHash string) *tracked {
	t := &tracked{first: f, content: map[string]bool{}, ruleHash: ruleHash}
	t.learn(f.Matches)
	return t
}

// learn records the content of ms and returns the matches whose content was new (one
// per content key) and whether the finding's content is now full.
func (t *tracked) learn(ms []detectors.StringMatch) (fresh []detectors.StringMatch, full bool) {
	for _, m := range ms {
		k := contentKey(m)
		if t.content[k] || len(t.content) >= maxContent {
			continue
		}
		t.content[k] = true
		fresh = append(fresh, m)
		full = len(t.content) == maxContent
	}
	return fresh, full
}

// ruleView is what the tracker needs to know of the running rule set.
type ruleView interface {
	// loaded reports whether the rule is in the set; empty reports a set with no rules
	// (a start with an empty folder), which decides nothing about known findings.
	loaded(yara.RuleName) bool
	empty() bool
	// fileHash is the hash of the file that defines namespace ns ("" unknown).
	fileHash(ns string) string
}

// update records the findings of a pass run with rules. New findings are added, known
// ones that matched new content updated. When clean (the pass covered all memory, with
// one rule set throughout), a known finding that did not match ends: retired when its
// rule's file changed since it last matched, gone otherwise. A finding whose rule is not
// loaded is left to retire.
func (t *tracker) update(fs []detectors.Finding, clean bool, rules ruleView) (c changes) {
	seen := make(map[string]bool, len(fs))
	for _, f := range fs {
		if !rules.loaded(ruleOf(f)) {
			continue // matched by a rule retired during the pass
		}
		k := findingKey(f)
		seen[k] = true
		tr, ok := t.known[k]
		if !ok {
			t.known[k] = newTracked(f, rules.fileHash(f.Namespace))
			c.added = append(c.added, f)
			c.dirty = true
			continue
		}
		if fresh, full := tr.learn(f.Matches); len(fresh) > 0 {
			c.updated = append(c.updated, update{first: tr.first, fresh: fresh, full: full})
			c.dirty = true
		}
		if clean && (tr.changed || tr.ruleHash != rules.fileHash(f.Namespace)) {
			tr.changed, tr.ruleHash = false, rules.fileHash(f.Namespace)
			c.dirty = true
		}
	}
	if clean && !rules.empty() {
		for _, k := range sortedKeys(t.known) {
			tr := t.known[k]
			if seen[k] || !rules.loaded(ruleOf(tr.first)) {
				continue
			}
			if tr.changed {
				c.retired = append(c.retired, ending{first: tr.first, reason: alert.ReasonRuleChanged})
			} else {
				c.gone = append(c.gone, tr.first)
			}
			delete(t.known, k)
			c.dirty = true
		}
	}
	return c
}

// rulesChanged applies a new rule set (a reload, or the set loaded at start to the
// findings restored from before): findings whose rule is gone from it are retired; those
// whose rule's file changed are marked, to retire if the next clean pass lacks them. An
// empty set (no rule files) decides nothing.
func (t *tracker) rulesChanged(rules ruleView) (c changes) {
	if rules.empty() {
		return c
	}
	for _, k := range sortedKeys(t.known) {
		tr := t.known[k]
		switch h := rules.fileHash(tr.first.Namespace); {
		case !rules.loaded(ruleOf(tr.first)):
			c.retired = append(c.retired, ending{first: tr.first, reason: alert.ReasonRuleRemoved})
			delete(t.known, k)
			c.dirty = true
		case tr.ruleHash == "":
			tr.ruleHash = h // restored from a state file that did not record it
			c.dirty = true
		case h != tr.ruleHash && !tr.changed:
			tr.changed = true
			c.dirty = true
		}
	}
	return c
}

func (t *tracker) len() int { return len(t.known) }

func sortedKeys(m map[string]*tracked) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// mergeFindings adds fs to acc (used to join the parts of a pass that a prepare/resume
// split): a rule already in acc gets the other part's string matches, up to the driver's
// bound, so content found in either part counts.
func mergeFindings(acc map[string]detectors.Finding, fs []detectors.Finding) {
	for _, f := range fs {
		k := findingKey(f)
		cur, ok := acc[k]
		if !ok {
			acc[k] = f
			continue
		}
		n := max(0, min(len(f.Matches), memscan.MaxAddressesPerRule-len(cur.Matches)))
		cur.Matches = append(append([]detectors.StringMatch(nil), cur.Matches...), f.Matches[:n]...)
		acc[k] = cur
	}
}

// apply meets the known findings with a rule set newly in force (memory loop only).
func (m *memLoop) apply(rules *loadedRules) {
	m.report(m.track.rulesChanged(rules))
}

// report alerts and saves what changed in the findings (memory loop only).
func (m *memLoop) report(c changes) {
	now := m.s.clk.Now().UTC()
	evs := make([]alert.Event, 0, len(c.added)+len(c.updated)+len(c.gone)+len(c.retired))
	for _, f := range c.added {
		evs = append(evs, alert.FromFinding(f, alert.StateNew))
	}
	for _, u := range c.updated {
		evs = append(evs, alert.Updated(u.first, now, u.fresh))
		if u.full {
			// A rule matching ever new content (or a guest spraying it) would otherwise
			// alert every pass; say once that this finding stops telling.
			m.s.log.Warn("memory finding holds the most content it remembers; its further new content is not alerted",
				"rule", u.first.Namespace+":"+u.first.Rule, "content", maxContent)
			evs = append(evs, alert.Health(now, alert.SevMedium, "memory", "finding-content-full",
				fmt.Sprintf("memory finding of YARA rule %s:%s on %s has matched %d distinct strings: further new content of this rule is not alerted until the finding ends",
					u.first.Namespace, u.first.Rule, m.s.currentTarget().Name, maxContent)))
		}
	}
	for _, f := range c.gone {
		f.Time = now // when it was seen gone; the rest is as first reported
		evs = append(evs, alert.FromFinding(f, alert.StateGone))
	}
	for _, r := range c.retired {
		evs = append(evs, alert.Retired(r.first, now, r.reason))
		m.s.log.Info("memory finding retired", "rule", r.first.Namespace+":"+r.first.Rule, "reason", r.reason)
	}
	m.s.emitAll(evs)
	m.s.m.findings.Set(float64(m.track.len()))
	m.s.m.findingsNew.Add(float64(len(c.added)))
	m.s.m.findingsUpdated.Add(float64(len(c.updated)))
	m.s.m.findingsEnded.WithLabelValues("gone").Add(float64(len(c.gone)))
	m.s.m.findingsEnded.WithLabelValues("retired").Add(float64(len(c.retired)))
	if c.dirty {
		m.s.saveMemory(m.track)
	}
	m.mu.Lock()
	m.findings = m.track.len()
	m.mu.Unlock()
}
