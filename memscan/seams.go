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
	// Alone counts the scanned windows that a batched screen found a string across and
	// that were then scanned alone (the others' screen settled them).
	Alone int
	Bytes uint64 // of the scanned windows

	Errors []error
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
	// In address order, so that each batch's windows ascend and seams sharing a left
	// frame are neighbours (see seamWorker.batch).
	sort.Slice(todo, func(i, j int) bool {
		return todo[i].Left < todo[j].Left || todo[i].Left == todo[j].Left && todo[i].Right < todo[j].Right
	})
	seams = todo
	jobs := make(chan []Seam)
	results := make(chan seamOut, s.Workers)
	var wg sync.WaitGroup
	for range min(s.Workers, max(len(seams), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc, err := rules.NewScanner()
			if err != nil {
				for batch := range jobs {
					for _, sm := range batch {
						results <- seamOut{seam: sm, err: fmt.Errorf("seam %#x|%#x: creating scanner: %w", sm.Left, sm.Right, err)}
					}
				}
				return
			}
			defer sc.Close()
			w := &seamWorker{s: s, sc: sc, rulesID: rules.ID(), buf: make([]byte, SeamBatch*2*s.Half)}
			w.cross, _ = sc.(CrossingScanner)
			for batch := range jobs {
				w.batch(src, batch, results)
			}
		}()
	}
	go func() {
		defer close(jobs)
		for len(seams) > 0 {
			n := min(len(seams), SeamBatch)
			select {
			case jobs <- seams[:n]:
				seams = seams[n:]
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
			if r.alone {
				res.Alone++
			}
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

// SeamBatch is how many seam windows a worker takes at a time; their windows that must
// be scanned go to the rule engine in one batched scan (CrossingScanner) when it can.
const SeamBatch = 64

// A CrossingScanner is a BlockScanner that can screen many windows in one run of the
// rule engine (detectors/yara MemoryScanner.Crossing): buf holds len(bases) windows of
// win bytes, window i at address bases[i] (ascending, apart); hit[i] reports a string
// match in window i from before offset at to after it, whatever the rule conditions. A
// window without a hit must be one whose scan alone keeps nothing across at. An error
// means: scan each window alone.
type CrossingScanner interface {
	Crossing(buf []byte, win int, bases []uint64, at int) (hit []bool, err error)
}

type seamOut struct {
	seam    Seam
	st      seamState
	zero    bool
	scanned bool
	alone   bool // scanned alone after the batch screen found a string across it
	bytes   int
	err     error
}

// seamWorker is one worker's scanner and buffer (SeamBatch windows).
type seamWorker struct {
	s       *SeamScanner
	sc      BlockScanner
	cross   CrossingScanner
	rulesID string
	buf     []byte
	pend    []pendingSeam
	bases   []uint64
}

type pendingSeam struct {
	seam  Seam
	win   []byte // in buf, in address order; or its own copy when alone
	hash  uint64
	alone bool // same left frame as the window before it: cannot share its batch
}

// batch handles a batch of seams, sorted by Left: each is read, and settled when a side
// is zero or its window is unchanged; the windows left are screened in one batched scan
// (CrossingScanner), and only those with a string across the seam are scanned alone,
// which keeps exactly what scanning every window alone keeps. Without batching (a
// scanner that cannot, a rule set with chained strings, a failed screen) each window is
// scanned alone.
func (w *seamWorker) batch(src Source, seams []Seam, out chan<- seamOut) {
	s, h := w.s, w.s.Half
	w.pend, w.bases = w.pend[:0], w.bases[:0]
	n := 0 // windows laid in buf
	for _, sm := range seams {
		// Two seams with the same left frame have windows at the same address, which one
		// libyara scan cannot tell apart: the second is scanned alone.
		alone := n > 0 && w.bases[n-1] == sm.Left+PageSize-uint64(h)
		win := w.buf[n*2*h : (n+1)*2*h]
		if alone {
			win = make([]byte, 2*h)
		}
		r, hash, scan := s.prepare(src, w.rulesID, sm, win)
		if !scan {
			out <- r
			continue
		}
		w.pend = append(w.pend, pendingSeam{seam: sm, win: win, hash: hash, alone: alone})
		if !alone {
			w.bases = append(w.bases, sm.Left+PageSize-uint64(h))
			n++
		}
	}
	var hit []bool // by window in buf
	if w.cross != nil && n > 1 {
		got, err := w.cross.Crossing(w.buf[:n*2*h], 2*h, w.bases, h)
		if err == nil && len(got) == n {
			hit = got
		}
	}
	k := 0
	for _, p := range w.pend {
		screened := hit != nil && !p.alone
		if screened {
			k++
			if !hit[k-1] {
				// Nothing crosses the seam: the window's result is empty, as its scan
				// alone would have found (CrossingScanner).
				st := s.newState(p.seam, p.hash, w.rulesID, nil)
				s.store(p.seam, st)
				out <- seamOut{seam: p.seam, st: st, scanned: true, bytes: len(p.win)}
				continue
			}
		}
		st, err := s.scanAlone(w.sc, w.rulesID, p.seam, p.win, p.hash)
		out <- seamOut{seam: p.seam, st: st, scanned: true, alone: screened, bytes: len(p.win), err: err}
	}
}

// prepare reads one seam's window into win and settles it when a side is zero or the
// window is unchanged; scan reports that it must be scanned (hash is the window's).
func (s *SeamScanner) prepare(src Source, rulesID string, sm Seam, win []byte) (r seamOut, hash uint64, scan bool) {
	h := s.Half
	r.seam = sm
	s.mu.Lock()
	prev, ok := s.cache[sm]
	s.mu.Unlock()
	if _, err := src.ReadAt(win[:h], int64(sm.Left+PageSize-uint64(h))); err != nil {
		r.err = fmt.Errorf("seam %#x|%#x: left side: %w", sm.Left, sm.Right, err)
		return r, 0, false
	}
	if _, err := src.ReadAt(win[h:], int64(sm.Right)); err != nil {
		r.err = fmt.Errorf("seam %#x|%#x: right side: %w", sm.Left, sm.Right, err)
		return r, 0, false
	}
	if seamZero(win[:h]) || seamZero(win[h:]) {
		s.store(sm, seamState{zero: true, checked: s.cur})
		r.zero = true
		return r, 0, false
	}
	hash = xxh3.HashSeed(win, s.seed)
	if ok && !prev.zero && prev.hash == hash && prev.rules == rulesID && prev.reused < s.ReusePasses {
		prev.reused++
		prev.checked = s.cur
		s.store(sm, prev)
		r.st = prev
		return r, hash, false
	}
	return r, hash, true
}

// scanAlone scans one seam's window and keeps what crosses the seam.
func (s *SeamScanner) scanAlone(sc BlockScanner, rulesID string, sm Seam, win []byte, hash uint64) (seamState, error) {
	h := s.Half
	ms, err := sc.Scan(win, sm.Left+PageSize-uint64(h))
	st := s.newState(sm, hash, rulesID, crossing(ms, h))
	if err != nil {
		return st, fmt.Errorf("seam %#x|%#x: scanning: %w", sm.Left, sm.Right, err)
	}
	s.store(sm, st)
	return st, nil
}

// newState is a freshly scanned seam's state; it starts part-way through its reuse
// allowance, by seam, so that rescans of unchanged seams spread over the passes.
func (s *SeamScanner) newState(sm Seam, hash uint64, rulesID string, ms []detectors.Match) seamState {
	return seamState{hash: hash, rules: rulesID, matches: ms,
		reused: int((sm.Left^sm.Right)>>12) % s.ReusePasses, checked: s.cur}
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
