package yara

import (
	"errors"
	"fmt"
	"runtime/cgo"
	"sort"
	"strings"
	"time"
	"unsafe"

	goyara "github.com/hillu/go-yara/v4"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
)

// DefaultMaxMatchesPerRule is how many string matches a scan keeps per rule by default;
// the rest are counted in detectors.Match.Cut. A rule that matches every page cannot
// exhaust memory, and the loss is reported, not silent.
const DefaultMaxMatchesPerRule = detectors.DefaultMaxMatchesPerRule

// MemoryScanner scans windows of guest memory with one rule set, the way YARA scans a
// process's memory. Like Scanner it is not safe for concurrent use and must not be
// copied: give each worker its own.
type MemoryScanner struct {
	s      *Scanner
	window map[[2]string]bool // Rules.windowNS
	it     windowIterator
	ws     *windowScan // the C window path's match collector, reached through h
	h      cgo.Handle
	// chained: 0 not known yet, 1 the rule set has chained strings (no batches), 2 not
	chained int8
	// sensitive is Screen's flag per libyara rule index (Rules.sensitive), made once.
	sensitive []byte
}

// NewMemoryScanner returns a scanner for memory windows. timeout bounds each scan (0:
// none); maxMatches bounds the string matches kept per rule and window (0:
// DefaultMaxMatchesPerRule).
func (r *Rules) NewMemoryScanner(timeout time.Duration, maxMatches int) (*MemoryScanner, error) {
	s, err := r.NewScanner(timeout)
	if err != nil {
		return nil, err
	}
	s.SetMaxMatches(maxMatches)
	// Process-memory mode: the pe module reads headers as mapped images and entrypoint
	// is an address, as with yara -p.
	s.s.SetFlags(goyara.ScanFlagsProcessMemory | scanFlagsNoTryCatch)
	return &MemoryScanner{s: s, window: r.windowNS}, nil
}

// Scan runs the rules over buf, which holds guest memory from guest-physical address
// base. libyara sees buf as one memory block at address base through its block
// iterator, as it sees a process's memory in yara -p, not as a file. So, by libyara
// 4.2.3's rules for block scans:
//   - filesize is undefined: a condition on it is false, so "filesize < 1MB" never holds
//     merely because a window is small;
//   - positions are guest-physical addresses: @a[1], "$a at N", "$a in (N..M)" and
//     uint16(N) refer to address N, which lies in at most one window; "uint16(0) ==
//     0x5A4D" reads address 0 (undefined, hence false, in every other window), not the
//     first bytes of whichever window is being scanned;
//   - entrypoint and the file-format modules (pe, elf, ...) parse a header found at the
//     start of the window, as yara -p parses one at the start of a process region;
//   - counts (#a) and "N of them" count within the window.
//
// Offsets in the returned matches are relative to buf. Matches of rules listed by
// WindowRules carry Window true.
func (m *MemoryScanner) Scan(buf []byte, base uint64) ([]detectors.Match, error) {
	if len(buf) == 0 {
		return nil, nil
	}
	var out []detectors.Match
	var err error
	if cs := cScanner(m.s.s); cs != nil {
		out, err = m.scanC(cs, buf, base)
	} else {
		out, err = m.scanGo(buf, base)
	}
	for i := range out {
		out[i].Window = m.window[[2]string{out[i].Namespace, out[i].Rule}]
	}
	if err != nil {
		return out, m.s.scanError(err)
	}
	return out, nil
}

// scanGo scans through go-yara's ScanMemBlocks with a Go iterator: every block look-up
// of libyara is a cgo callback, and go-yara copies the window into malloc'd memory. It
// is the fallback when the go-yara scanner's C handle cannot be reached (cScanner).
func (m *MemoryScanner) scanGo(buf []byte, base uint64) ([]detectors.Match, error) {
	m.it = windowIterator{buf: buf, base: base}
	m.it.block = goyara.MemoryBlock{Base: base, Size: uint64(len(buf)), FetchData: m.it.fetch}
	var mr goyara.MatchRules
	m.s.s.SetCallback(&mr)
	err := m.s.s.ScanMemBlocks(&m.it)
	m.it = windowIterator{} // do not keep the caller's buffer
	return convert(mr, base, m.s.maxMatches), err
}

// Close frees the scanner's libyara state.
func (m *MemoryScanner) Close() {
	if m.ws != nil {
		m.h.Delete()
		m.ws = nil
	}
	m.s.Close()
}

// windowIterator is a one-block goyara.MemoryBlockIterator without a file size (so
// filesize is undefined, as for process memory).
type windowIterator struct {
	buf   []byte
	base  uint64
	block goyara.MemoryBlock
	// filled is the address of the libyara-side buffer that already holds buf: go-yara
	// copies a block into malloc'd memory on every fetch, and libyara fetches the block
	// again for every uint*() read and every module that looks at it. The buffer belongs
	// to one ScanMemBlocks call, and Scan resets the iterator before each.
	filled uintptr
}

func (w *windowIterator) First() *goyara.MemoryBlock { return &w.block }
func (w *windowIterator) Next() *goyara.MemoryBlock  { return nil }

func (w *windowIterator) fetch(dst []byte) {
	if len(dst) == 0 {
		return
	}
	p := uintptr(unsafe.Pointer(&dst[0]))
	if p == w.filled {
		return
	}
	copy(dst, w.buf)
	w.filled = p
}

// scanError marks libyara's timeout (Timeout() true) and names the rule libyara was
// running when a scan failed.
func (s *Scanner) scanError(err error) error {
	if err == goyara.Error(errScanTimeout) {
		err = timeoutError{err}
	}
	if r := s.s.GetLastErrorRule(); r != nil {
		return &ScanError{Namespace: r.Namespace(), Rule: r.Identifier(), Err: err}
	}
	return err
}

// ScanError is a scan that failed while libyara was matching a rule's strings (too many
// matches, or the time limit): it names the rule. libyara 4.2.3 names no rule for a
// time limit hit while evaluating conditions; the scan error then only reports
// Timeout(), and Profile over the window that timed out names the file that costs.
type ScanError struct {
	Namespace, Rule string
	Err             error
}

func (e *ScanError) Error() string {
	return fmt.Sprintf("rule %s:%s: %v", e.Namespace, e.Rule, e.Err)
}
func (e *ScanError) Unwrap() error { return e.Err }

// Timeout reports whether the scan hit its time limit.
func (e *ScanError) Timeout() bool {
	var t timeoutError
	return errors.As(e.Err, &t)
}

// FileCost is what one rule file costs: the time its rules took over a sample window,
// compiled and scanned on their own.
type FileCost struct {
	File  string        `json:"file"`  // relative to the rules folder
	Rules int           `json:"rules"` // rules compiled from it (its includes too)
	Time  time.Duration `json:"time"`  // scan time over the sample, best of 3
	// Err is set when the file's rules hit the time limit over the sample (Timeout()
	// true) or failed otherwise; Time is then the time until it stopped.
	Err error `json:"-"`
}

// Profile measures the cost of each loaded rule file: its rules compiled on their own
// and scanned over sample as a memory window at address base, best of 3 (libyara 4.2.3
// as Debian builds it has no per-rule profiling). timeout bounds each scan. Costs are
// sorted, most expensive first. It compiles every file again, so it takes about as long
// as Compile plus three scans of sample per file: run it off the scan path.
func (r *Rules) Profile(sample []byte, base uint64, timeout time.Duration) ([]FileCost, error) {
	if r.dir == "" {
		return nil, errors.New("profiling rules: no rules folder")
	}
	var out []FileCost
	for _, f := range r.files {
		one, errs := compileFiles(r.dir, []string{f})
		if errs != nil {
			return nil, fmt.Errorf("profiling %s: %v", f, errs[0])
		}
		fc := FileCost{File: f, Rules: one.count}
		s, err := one.NewMemoryScanner(timeout, 1)
		if err != nil {
			return nil, err
		}
		for i := range 3 {
			start := time.Now()
			_, err := s.Scan(sample, base)
			d := time.Since(start)
			if i == 0 || d < fc.Time {
				fc.Time = d
			}
			if err != nil {
				fc.Err, fc.Time = err, d
				break
			}
		}
		s.Close()
		one.rules.Destroy()
		out = append(out, fc)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time > out[j].Time })
	return out, nil
}

// WindowCost is what the whole rule set costs per memory window (WindowCost), for the
// rules-slow estimate of a pass.
type WindowCost struct {
	Alone time.Duration // a window scanned alone, best of 3
	// Screened is the time per window when the memory driver screens a run of
	// memscan.DefaultBatch windows in one libyara call (MemoryScanner.Screen), the
	// windows with a hit scanned alone after it, best of 3; 0 when the rule set is not
	// screened, or a window alone takes memscan.DefaultRunBudget or more (the driver's
	// runs then hold one window, scanned alone).
	Screened time.Duration
	// Pass is what a window is expected to cost in a pass: Alone when the set is not
	// screened; else per window in a run as long as the driver makes it (as many
	// windows as fit DefaultRunBudget, at most DefaultBatch), from Alone for a run of 1
	// to Screened for a run of DefaultBatch in proportion (passCost); never more than
	// Alone (the driver stops screening where it does not pay).
	Pass time.Duration
}

// WindowCost times the whole rule set over sample as a memory window at address base,
// alone and, when the set is screened, in a screened run of memscan.DefaultBatch copies
// of sample at consecutive addresses (see WindowCost). timeout bounds each scan. Unlike
// Profile it measures the rule set as the memory driver runs it: one scan per window
// (or per run) for all files, not one per file.
func (r *Rules) WindowCost(sample []byte, base uint64, timeout time.Duration) (WindowCost, error) {
	var wc WindowCost
	s, err := r.NewMemoryScanner(timeout, 0)
	if err != nil {
		return wc, err
	}
	defer s.Close()
	for i := range 3 {
		start := time.Now()
		_, err := s.Scan(sample, base)
		d := time.Since(start)
		if err != nil {
			return WindowCost{Alone: d, Pass: d}, err
		}
		if i == 0 || d < wc.Alone {
			wc.Alone = d
		}
	}
	wc.Pass = wc.Alone
	if !r.screen || wc.Alone >= memscan.DefaultRunBudget {
		return wc, nil
	}
	const n = memscan.DefaultBatch
	wins, bases := make([][]byte, n), make([]uint64, n)
	for i := range n {
		wins[i], bases[i] = sample, base+uint64(i*len(sample))
	}
	var best time.Duration
	for i := range 3 {
		start := time.Now()
		hit, err := s.Screen(wins, bases)
		if err != nil {
			return wc, nil // the driver scans each window alone
		}
		d := time.Since(start)
		for _, h := range hit {
			if h {
				d += wc.Alone
			}
		}
		if i == 0 || d < best {
			best = d
		}
	}
	wc.Screened = max(best/n, 1)
	wc.Pass = passCost(wc.Alone, wc.Screened)
	return wc, nil
}

// passCost is WindowCost.Pass from the time of a window alone and screened in a run of
// memscan.DefaultBatch: between the two in proportion to the run's length, as measured
// with elastic's rules (64 MiB dense, 1 worker, CPU, load 8-10: runs of 16 saved 15-25%
// against window by window, runs of about 4 windows, always screened, nothing within
// noise: the screen's own work per call is about a window's), where a model of a fixed
// cost per libyara call shared by the run (F/n + v) promised 19%.
func passCost(alone, screened time.Duration) time.Duration {
	const batch = memscan.DefaultBatch
	if screened <= 0 || screened >= alone {
		return alone
	}
	cost := func(n time.Duration) time.Duration { return alone - (alone-screened)*(n-1)/(batch-1) }
	n := time.Duration(batch)
	for range batch { // the run length the driver settles on, from its own time per window
		m := min(max(memscan.DefaultRunBudget/cost(n), 1), batch)
		if m == n {
			break
		}
		n = m
	}
	return cost(n)
}

// SlowWarnings are the compiler's warnings about strings that slow scanning down
// ("string "$a" may slow down scanning"), the ones rules check prints, by file and line.
func (r *Rules) SlowWarnings() []RuleError {
	var out []RuleError
	for _, w := range r.warns {
		if strings.Contains(w.Text, "slow down scanning") {
			out = append(out, w)
		}
	}
	return out
}
