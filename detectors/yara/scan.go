package yara

import (
	"fmt"
	"time"

	goyara "github.com/hillu/go-yara/v4"

	"github.com/domainm/domainm/detectors"
)

// Scanner scans buffers with one rule set. A Scanner is not safe for concurrent use and
// must not be copied: give each worker its own.
type Scanner struct {
	rules      *Rules
	s          *goyara.Scanner
	timeout    time.Duration
	maxMatches int
}

// NewScanner returns a scanner for r. timeout bounds each Scan call (0: none).
func (r *Rules) NewScanner(timeout time.Duration) (*Scanner, error) {
	s, err := goyara.NewScanner(r.rules)
	if err != nil {
		return nil, fmt.Errorf("creating yara scanner: %w", err)
	}
	s.SetTimeout(timeout)
	// Every buffer handed to libyara is Go memory, never a mapping that can fault, so
	// libyara's own SIGBUS/SIGSEGV handler is not needed; installed during a scan, it took
	// the faults Go's recovery expects on another thread (a read of a RAM file truncated
	// under its mapping), and that thread spun: the pass hung (TestRunHealthAgrees).
	s.SetFlags(scanFlagsNoTryCatch)
	return &Scanner{rules: r, s: s, timeout: timeout, maxMatches: DefaultMaxMatchesPerRule}, nil
}

// SetMaxMatches bounds the string matches kept per rule and scan (0 or less:
// DefaultMaxMatchesPerRule); the others are counted in detectors.Match.Cut.
func (s *Scanner) SetMaxMatches(n int) {
	if n <= 0 {
		n = DefaultMaxMatchesPerRule
	}
	s.maxMatches = n
}

// SetVars sets the file external variables for the next scans (Loki/THOR names).
func (s *Scanner) SetVars(filename, filepath, extension, filetype string) error {
	for k, v := range map[string]string{"filename": filename, "filepath": filepath, "extension": extension, "filetype": filetype} {
		if err := s.s.DefineVariable(k, v); err != nil {
			return fmt.Errorf("setting external %s: %w", k, err)
		}
	}
	return nil
}

// Scan runs the rules over buf. Offsets in the returned matches are relative to buf.
func (s *Scanner) Scan(buf []byte) ([]detectors.Match, error) {
	var mr goyara.MatchRules
	s.s.SetCallback(&mr)
	if err := s.s.ScanMem(buf); err != nil {
		return convert(mr, 0, s.maxMatches), s.scanError(err)
	}
	return convert(mr, 0, s.maxMatches), nil
}

// errScanTimeout is libyara's ERROR_SCAN_TIMEOUT (yara/error.h).
const errScanTimeout = 26

// timeoutError is a scan stopped by the scanner's time limit; it reports Timeout() true
// (as net.Error does), which is how the memory scan driver tells a timed-out block from
// an unreadable one.
type timeoutError struct{ err error }

func (e timeoutError) Error() string { return e.err.Error() }
func (e timeoutError) Unwrap() error { return e.err }
func (e timeoutError) Timeout() bool { return true }

// Close frees the scanner's libyara state.
func (s *Scanner) Close() { s.s.Destroy() }

// convert turns go-yara's matches into detectors.Match values with offsets relative to
// base, keeping at most max string matches per rule and counting the rest in Cut.
func convert(mr goyara.MatchRules, base uint64, max int) []detectors.Match {
	if len(mr) == 0 {
		return nil
	}
	out := make([]detectors.Match, 0, len(mr))
	for _, m := range mr {
		dm := detectors.Match{Rule: m.Rule, Namespace: m.Namespace, Tags: m.Tags}
		if len(m.Metas) > 0 {
			dm.Meta = make(map[string]string, len(m.Metas))
			for _, meta := range m.Metas {
				dm.Meta[meta.Identifier] = fmt.Sprint(meta.Value)
			}
		}
		for i, s := range m.Strings {
			if i == max {
				dm.Cut = len(m.Strings) - max
				break
			}
			sm := detectors.StringMatch{Name: s.Name, Offset: s.Base + s.Offset - base, Length: len(s.Data)}
			sm.SetData(s.Data)
			dm.Strings = append(dm.Strings, sm)
		}
		out = append(out, dm)
	}
	return out
}
