package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/domainm/domainm/detectors"
)

// What the supervisor remembers across restarts, in the state folder, so that a
// restart (an upgrade, a watchdog restart) neither re-alerts every finding still
// present nor misses the "gone" of one that vanished meanwhile.
const (
	memoryStateFile = "memory-findings.json"
	diskStateFile   = "disk-reported.json"
)

// memoryStateVersion is the format of memoryStateFile. Version 1 (no "version" key)
// kept only the findings as first reported; version 2 adds per finding the content
// keys it has reported and its rule file's hash. A version 1 file is read with each
// finding's content taken from the matches it first reported (what its alert named).
const memoryStateVersion = 2

type memoryState struct {
	Version  int              `json:"version,omitempty"`
	Target   detectors.Target `json:"target"`
	Findings []savedFinding   `json:"findings"`
}

// savedFinding is a tracked finding on disk: the finding as first reported, and since
// version 2 its content keys and rule hash.
type savedFinding struct {
	detectors.Finding
	Content  []string `json:"content,omitempty"`
	RuleHash string   `json:"rule_hash,omitempty"`
	Changed  bool     `json:"rule_changed,omitempty"`
}

type diskState struct {
	Target   detectors.Target `json:"target"`
	Reported []string         `json:"reported"`
}

// saveJSON writes v to path atomically (temp file, fsync, rename).
func saveJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loadJSON reads path into v; a missing file is not an error (ok false).
func loadJSON(path string, v any) (ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

// sameTarget reports whether saved state belongs to the configured target.
func sameTarget(a, b detectors.Target) bool {
	if a.UUID != "" || b.UUID != "" {
		return a.UUID == b.UUID
	}
	return a.Name == b.Name
}

func (s *Supervisor) statePath(name string) string { return filepath.Join(s.cfg.State.Dir, name) }

// restoreMemory loads the findings known before a restart into t.
func (s *Supervisor) restoreMemory(t *tracker) {
	var st memoryState
	ok, err := loadJSON(s.statePath(memoryStateFile), &st)
	switch {
	case err != nil:
		s.log.Warn("ignoring saved memory findings", "err", err)
	case ok && !sameTarget(st.Target, s.currentTarget()):
		s.log.Warn("ignoring saved memory findings of another target", "saved", st.Target.Name)
	case ok:
		for _, sf := range st.Findings {
			tr := newTracked(sf.Finding, sf.RuleHash) // version 1: content from the first report
			if sf.Content != nil {
				tr.content = make(map[string]bool, len(sf.Content))
				for _, k := range sf.Content[:min(len(sf.Content), maxContent)] {
					tr.content[k] = true
				}
			}
			tr.changed = sf.Changed
			t.known[findingKey(sf.Finding)] = tr
		}
		s.log.Info("restored memory findings", "count", len(st.Findings), "version", max(st.Version, 1))
	}
}

func (s *Supervisor) saveMemory(t *tracker) {
	st := memoryState{Version: memoryStateVersion, Target: s.currentTarget(), Findings: []savedFinding{}}
	for _, k := range sortedKeys(t.known) {
		tr := t.known[k]
		st.Findings = append(st.Findings, savedFinding{Finding: tr.first, Content: slices.Sorted(maps.Keys(tr.content)),
			RuleHash: tr.ruleHash, Changed: tr.changed})
	}
	if err := saveJSON(s.statePath(memoryStateFile), st); err != nil {
		s.log.Error("saving memory findings", "err", err)
	}
}

func (s *Supervisor) restoreDisk(reported map[string]bool) {
	var st diskState
	ok, err := loadJSON(s.statePath(diskStateFile), &st)
	switch {
	case err != nil:
		s.log.Warn("ignoring saved disk changes", "err", err)
	case ok && !sameTarget(st.Target, s.currentTarget()):
		s.log.Warn("ignoring saved disk changes of another target", "saved", st.Target.Name)
	case ok:
		for _, k := range st.Reported {
			reported[k] = true
		}
	}
}

func (s *Supervisor) saveDisk(reported map[string]bool) {
	st := diskState{Target: s.currentTarget()}
	for k := range reported {
		st.Reported = append(st.Reported, k)
	}
	if err := saveJSON(s.statePath(diskStateFile), st); err != nil {
		s.log.Error("saving disk changes", "err", err)
	}
}
