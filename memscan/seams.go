package memscan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"

	"github.com/zeebo/xxh3"

	"github.com/domainm/domainm/detectors"
)

// PageSize is the granule of guest page tables that seams are made of.
const PageSize = 4096

// A Seam is a page boundary of some virtual address space (a process's, the kernel's
// vmalloc area) whose two sides are not adjacent in guest-physical memory: the last
// bytes of the 4 KiB frame at Left are followed, in that address space, by the first
// bytes of the frame at Right. A string that crosses it is split in two places of
// physical memory, so a physical pass cannot see it whole. Many address spaces can
// share a seam (a shared library's pages); it is scanned once.
type Seam struct {
	Left, Right uint64 // guest-physical addresses of the two frames (4 KiB aligned)
}

// SeamScanner scans the windows around seams: the last Half bytes of Left followed by
// the first Half bytes of Right. It keeps only the string matches that cross the seam
// (start in Left, end in Right): everything else lies in one page and is the physical
// pass's to find. A window with a side all zero is not scanned: what crosses the seam
// would be zero bytes on that side, which the physical pass does not match in zero
// pages either (see the scan driver's notes for rule authors). Like the Driver, it remembers per seam the window's hash and its
// matches, and scans again only seams whose window or rule set changed, or whose
// result stood for ReusePasses passes. A SeamScanner belongs to one target; Scan must
// not run concurrently with itself.
type SeamScanner struct {
	Half        int // bytes on each side (DefaultSeamHalf)
	Workers     int
	ReusePasses int
	seed        uint64

	mu    sync.Mutex
	cache map[Seam]seamState
	// The unchanged blocks of the last two passes (Scan's unchanged): a seam whose two
	// frames lie in unchanged blocks, checked in the pass before, is not even read.
	prev, cur *BlockSet
}

// DefaultSeamHalf is how far a seam's window reaches into each page: a string of up to
// DefaultSeamHalf+1 bytes that crosses a seam is found. Half a page keeps the extra
// bytes scanned to about one page per seam (each page is the left side of one seam
// and the right side of another), where whole pages on both sides would scan every
// page twice; see the package README for the measured cost.
const DefaultSeamHalf = 2048

type seamState struct {
	hash    uint64
	rules   string
	zero    bool              // a side is all zero
	matches []detectors.Match // Strings[i].Offset: offset in the window
	reused  int
	checked *BlockSet // the pass (its unchanged set) that last read the window
}

// NewSeamScanner returns a scanner; zero values take the defaults.
func NewSeamScanner(half, workers, reusePasses int) *SeamScanner {
	if half <= 0 || half > PageSize {
		half = DefaultSeamHalf
	}
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	if reusePasses <= 0 {
		reusePasses = DefaultReusePasses
	}
	return &SeamScanner{Half: half, Workers: workers, ReusePasses: reusePasses, seed: rand.Uint64(), cache: map[Seam]seamState{}}
}

// Forget drops the cache (a new source).
func (s *SeamScanner) Forget() {
	s.mu.Lock()
	s.cache = map[Seam]seamState{}
	s.mu.Unlock()
}

// SeamMatch is a rule's string matches across a seam. Offset in Match.Strings is the
// guest-physical address of the first byte (in the Left frame).
type SeamMatch struct {
	Seam  Seam
	Match detectors.Match // one rule, its strings that cross the seam
}

// SeamResult is what a seam scan found and did.
type SeamResult struct {
	Matches   []SeamMatch
	Seams     int // seams in the pass
	Zero      int // a side all zero: not scanned
	Unchanged int // same window and rule set as before: not scanned
	Scanned   int
	Bytes     uint64 // handed to the rule engine
	Errors    []error
}

// Scan scans the windows of seams with rules. unchanged is the memory pass's
// PassResult.Unchanged (nil: unknown): a seam whose frames it holds is taken from the
// cache without reading it, if the pass before read it. Seams whose frames cannot be
// read are reported in Errors and skipped. Cancelling ctx stops it after the windows
// in flight; it then returns ctx's error.
func (s *SeamScanner) Scan(ctx context.Context, src Source, seams []Seam, rules RuleSet, unchanged *BlockSet) (SeamResult, error) {
	res := SeamResult{Seams: len(seams)}
	if rules == nil {
		return res, errors.New("memscan: no rule set")
	}
	if unchanged != s.cur {
		s.prev, s.cur = s.cur, unchanged
	}
	// Seams known unchanged are settled here, without a trip through the workers.
	id := rules.ID()
	todo := make([]Seam, 0, len(seams))
	for _, sm := range seams {
		st, ok := s.settled(sm, id)
		if !ok {
			todo = append(todo, sm)
			continue
		}
		if st.zero {
			res.Zero++
			continue
		}
		res.Unchanged++
		res.Matches = appendSeamMatches(res.Matches, sm, st, s.Half)
	}
	seams = todo
	jobs := make(chan Seam)
	type out struct {
		seam    Seam
		st      seamState
		zero    bool
		scanned bool
		bytes   int
		err     error
	}
	results := make(chan out, s.Workers)
	var wg sync.WaitGroup
	for range min(s.Workers, max(len(seams), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc, err := rules.NewScanner()
			if err != nil {
				for sm := range jobs {
					results <- out{seam: sm, err: fmt.Errorf("seam %#x|%#x: creating scanner: %w", sm.Left, sm.Right, err)}
				}
				return
			}
			defer sc.Close()
			buf := make([]byte, 2*s.Half)
			for sm := range jobs {
				st, zero, scanned, err := s.one(src, sc, rules.ID(), sm, buf)
				results <- out{seam: sm, st: st, zero: zero, scanned: scanned, bytes: len(buf), err: err}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for _, sm := range seams {
			select {
			case jobs <- sm:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	for r := range results {
		switch {
		case r.err != nil:
			res.Errors = append(res.Errors, r.err)
		case r.zero:
			res.Zero++
		case !r.scanned:
			res.Unchanged++
		default:
			res.Scanned++
			res.Bytes += uint64(r.bytes)
		}
		res.Matches = appendSeamMatches(res.Matches, r.seam, r.st, s.Half)
	}
	sort.Slice(res.Matches, func(i, j int) bool {
		a, b := res.Matches[i], res.Matches[j]
		if a.Seam != b.Seam {
			return a.Seam.Left < b.Seam.Left || a.Seam.Left == b.Seam.Left && a.Seam.Right < b.Seam.Right
		}
		return a.Match.Namespace+"\x00"+a.Match.Rule < b.Match.Namespace+"\x00"+b.Match.Rule
	})
	return res, ctx.Err()
}

// appendSeamMatches adds a seam's cached matches with window offsets turned into
// guest-physical addresses.
func appendSeamMatches(out []SeamMatch, sm Seam, st seamState, half int) []SeamMatch {
	for _, m := range st.matches {
		m.Strings = append([]detectors.StringMatch(nil), m.Strings...)
		for i := range m.Strings {
			m.Strings[i].Offset += sm.Left + PageSize - uint64(half)
		}
		out = append(out, SeamMatch{Seam: sm, Match: m})
	}
	return out
}

// settled returns a seam's cached state when it holds without reading the seam: both
// frames lie in blocks the memory pass found unchanged, the pass before checked it, and
// it is zero or its result may stand again (same rules, ReusePasses not reached).
func (s *SeamScanner) settled(sm Seam, rulesID string) (seamState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, ok := s.cache[sm]
	if !ok || s.cur == nil || prev.checked == nil || prev.checked != s.prev && prev.checked != s.cur ||
		!s.cur.Has(sm.Left) || !s.cur.Has(sm.Right) || !prev.zero && (prev.rules != rulesID || prev.reused >= s.ReusePasses) {
		return prev, false
	}
	prev.checked = s.cur
	if !prev.zero {
		prev.reused++
	}
	s.cache[sm] = prev
	return prev, true
}

// one handles one seam: read both sides into buf, skip it when zero or unchanged, else
// scan and keep what crosses.
func (s *SeamScanner) one(src Source, sc BlockScanner, rulesID string, sm Seam, buf []byte) (st seamState, zero, scanned bool, err error) {
	h := s.Half
	s.mu.Lock()
	prev, ok := s.cache[sm]
	s.mu.Unlock()
	if _, err := src.ReadAt(buf[:h], int64(sm.Left+PageSize-uint64(h))); err != nil {
		return st, false, false, fmt.Errorf("seam %#x|%#x: left side: %w", sm.Left, sm.Right, err)
	}
	if _, err := src.ReadAt(buf[h:], int64(sm.Right)); err != nil {
		return st, false, false, fmt.Errorf("seam %#x|%#x: right side: %w", sm.Left, sm.Right, err)
	}
	if seamZero(buf[:h]) || seamZero(buf[h:]) {
		s.store(sm, seamState{zero: true, checked: s.cur})
		return st, true, false, nil
	}
	hash := xxh3.HashSeed(buf, s.seed)
	if ok && !prev.zero && prev.hash == hash && prev.rules == rulesID && prev.reused < s.ReusePasses {
		prev.reused++
		prev.checked = s.cur
		s.store(sm, prev)
		return prev, false, false, nil
	}
	ms, err := sc.Scan(buf, sm.Left+PageSize-uint64(h))
	st = seamState{hash: hash, rules: rulesID, matches: crossing(ms, h),
		reused: int((sm.Left^sm.Right)>>12) % s.ReusePasses, checked: s.cur}
	if err != nil {
		return st, false, true, fmt.Errorf("seam %#x|%#x: scanning: %w", sm.Left, sm.Right, err)
	}
	s.store(sm, st)
	return st, false, true, nil
}

func (s *SeamScanner) store(sm Seam, st seamState) {
	s.mu.Lock()
	s.cache[sm] = st
	s.mu.Unlock()
}

// crossing keeps the string matches that start before the seam (at half) and end after
// it; rules left without one are dropped. A rule whose strings all lie on one side
// matched bytes that are contiguous in physical memory too: the physical pass reports it.
func crossing(ms []detectors.Match, half int) []detectors.Match {
	var out []detectors.Match
	for _, m := range ms {
		var kept []detectors.StringMatch
		for _, sm := range m.Strings {
			if sm.Offset < uint64(half) && sm.Offset+uint64(sm.Length) > uint64(half) {
				kept = append(kept, sm)
			}
		}
		if len(kept) > 0 {
			m.Strings = kept
			out = append(out, m)
		}
	}
	return out
}

var zeroSeam [2 * PageSize]byte

func seamZero(b []byte) bool { return bytes.Equal(b, zeroSeam[:len(b)]) }
