package yara

import (
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
)

// DefaultBlockTimeout bounds libyara's time on one memory block: a pathological rule
// (or attacker-shaped memory) cannot stall a pass. It is the daemon's default
// memory.yara_timeout too.
const DefaultBlockTimeout = memscan.DefaultBlockTimeout

// MemoryRules adapts a compiled YARA rule set to memscan.RuleSet.
type MemoryRules struct {
	Rules   *Rules
	Timeout time.Duration // per block; 0 means DefaultBlockTimeout
	// MaxMatches bounds the string matches kept per rule and window; 0 means
	// DefaultMaxMatchesPerRule. The rest are counted (Finding.MatchesCut).
	MaxMatches int
}

var _ memscan.RuleSet = MemoryRules{}

// ID identifies the rule set's content.
func (m MemoryRules) ID() string { return m.Rules.ID() }

// NewScanner returns a scanner for one worker.
func (m MemoryRules) NewScanner() (memscan.BlockScanner, error) {
	t := m.Timeout
	if t == 0 {
		t = DefaultBlockTimeout
	}
	return m.Rules.NewMemoryScanner(t, m.MaxMatches)
}

// MemoryFindings turns a memory scan pass's matches (offsets are guest-physical addresses) into findings.
func MemoryFindings(ms []detectors.Match, target detectors.Target, at time.Time) []detectors.Finding {
	out := make([]detectors.Finding, 0, len(ms))
	for _, m := range ms {
		out = append(out, detectors.Finding{
			Detector:  "yara-memory",
			Rule:      m.Rule,
			Namespace: m.Namespace,
			Tags:      m.Tags,
			Meta:      m.Meta,
			Matches:   m.Strings,
			Time:      at,
			Target:    target,

			MatchesCut:      m.Cut,
			WindowDependent: m.Window,
			Process:         firstProcess(m.Strings),
		})
	}
	return out
}

// firstProcess is the finding's process: the first process mapping the first match
// that any process maps (matches are in address order, processes in pid order).
func firstProcess(ms []detectors.StringMatch) *detectors.Process {
	for _, s := range ms {
		if len(s.Processes) > 0 {
			p := s.Processes[0]
			return &detectors.Process{PID: p.PID, Name: p.Name, Address: p.Address}
		}
	}
	return nil
}
