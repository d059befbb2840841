package memscan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"sort"
	"sync"
	"time"
	"unsafe"

	"github.com/zeebo/xxh3"

	"github.com/domainm/domainm/detectors"
)

// Block and overlap sizes. A block is the unit of parallelism, change detection and
// cancellation; the overlap is how far a block's scan window reaches into the next block
// so that a string crossing the boundary is still seen whole.
//
// Rule authors: in a memory scan YARA sees one window (block + overlap) at a time, as
// memory at its guest-physical address, the way yara -p sees a process's memory (see
// detectors/yara MemoryScanner.Scan), so
//   - filesize is undefined (conditions on it are false), whatever the window's size;
//   - offsets are guest-physical addresses: @a[1], "$a at N" and uint16(N) refer to
//     address N, not to the start of whichever window is scanned;
//   - counts (#a > 20) and "N of them" count within one window; a condition over many
//     occurrences spread across RAM will not hold;
//   - a string match up to Overlap bytes long is found wherever it lies, exactly once: a
//     match is kept only by the window in whose block it starts;
//   - windows that are entirely zero are not scanned, and all-zero 4 KiB pages at the start
//     and end of a window are cut off before scanning: a string that begins or ends with
//     zero bytes lying in a zero page may be missed, and rules matching zeros never fire.
//
// DefaultBlockSize is the one default for every scan, the daemon's (memory.block_size)
// and scan-memory's (--block-size), so both match the same rules.
const (
	DefaultBlockSize = 256 << 10
	DefaultOverlap   = 4 << 10
)

// DefaultBlockTimeout bounds the rule engine's time on one block by default
// (memory.yara_timeout, scan-memory --timeout): a pathological rule, or attacker-shaped
// memory, cannot stall a pass.
const DefaultBlockTimeout = 30 * time.Second

// BlockScanner runs a rule set over one window of guest memory: buf holds the bytes
// from guest-physical address base. The scanner sees memory, not a file (detectors/yara
// presents it to libyara as yara -p presents a process's memory: filesize undefined,
// positions are addresses). Offsets in the returned matches are relative to buf. One
// BlockScanner is used by one goroutine at a time.
type BlockScanner interface {
	Scan(buf []byte, base uint64) ([]detectors.Match, error)
	Close()
}

// RuleSet is a compiled rule set. ID identifies its content: blocks whose bytes and rule
// set ID are unchanged since the last pass are not scanned again.
type RuleSet interface {
	ID() string
	NewScanner() (BlockScanner, error)
}

// DriverConfig tunes a Driver; zero values take the defaults.
type DriverConfig struct {
	BlockSize int // bytes per block (DefaultBlockSize)
	Overlap   int // bytes each window reaches into the next block (DefaultOverlap)
	Workers   int // parallel scanners (runtime.NumCPU())
	// Batch is how many windows a worker takes at a time and screens in one run of the
	// rule engine when its scanner can (Screener) and the rule set's fixed cost per
	// scan is worth it (screenMinShare): only windows with a string match are then
	// scanned alone (DefaultBatch; 1 disables). Each worker holds Batch window buffers.
	Batch int
	// RunBudget bounds a run by time: a worker takes as many adjacent windows (at least
	// 1, at most Batch) as the rule engine is expected to get through in RunBudget, by
	// the time per window measured on the runs before (DefaultRunBudget; negative: Batch
	// windows whatever they cost). One libyara call cannot be interrupted, so a
	// cancelled pass waits for the runs in flight: this is what keeps prepare's wait
	// near one window's time (DESIGN: "prepare: finish the current block").
	RunBudget time.Duration
	// ReusePasses bounds how many passes in a row a block's cached result may stand for
	// its unchanged content (DefaultReusePasses). The change hash is fast, not
	// cryptographic: should a guest ever craft a change that keeps a block's hash, the
	// block is still scanned again by the pass after ReusePasses passes of reuse. Blocks
	// are staggered (a fresh result starts part-way through its allowance), so each pass
	// rescans about 1/ReusePasses of the unchanged blocks. 1 lets a result stand for one
	// pass, then the block is scanned again.
	ReusePasses int
	// InPlace lets a source whose mapping cannot fault (a sealed memfd: inPlacer) be
	// scanned where it lies, with no copy. A result scanned in place stands for its pass
	// only: the rule engine read the guest's live bytes, not the bytes the change hash
	// was taken from, so a guest that showed the hash its payload and the scan something
	// else would otherwise have a clean result stand for the payload for up to
	// ReusePasses passes. For one-pass scans (scan-memory); the daemon copies what
	// changed and reuses what did not.
	InPlace bool
}

// DefaultBatch windows of the default size are 8 MiB: a worker's buffers for a source
// that is copied when its runs are screened (8.1 MiB; not screened, eachGroup windows'
// with an EachScanner, else one window's),
// and libyara's fixed cost per scan (every rule's condition evaluated, the match store
// set up and cleared: 0.1-0.6 ms with elastic's 3,021 rules) paid once per 8 MiB
// instead of once per 256 KiB where nothing matches. Runs this long are made where the
// run budget allows them: scan-memory (no budget) and rule sets whose windows take
// under 0.3 ms; with elastic's rules the daemon's runs hold 3-5 windows. From 16 to 32
// (callgrind, elastic, 64 MiB dense, 1 worker): 16 screens of about 2.2 M instructions
// of fixed cost each became 8, 0.7% of yara's instructions per byte.
const DefaultBatch = 32

// DefaultRunBudget: a run of windows is expected to take at most 10 ms of a worker's
// CPU time, so that a pass cancelled by prepare returns about 10 ms (or one window, when
// a window takes longer) after the cancel, against up to Batch windows (16 then: 25-100
// ms with elastic's 3,021 rules at load 10) with runs of Batch. The price: with elastic's rules
// (about 2-3 ms of CPU per 256 KiB window here) a run holds 3-5 windows, and screening
// such short runs saves nothing measurable (in-process, the bench's 64 MiB dense image,
// 1 worker, two rounds at load 8-10, CPU-ms per pass: runs of 16 610-733, 10 ms runs
// 685-760 with the judge switching the screen off about half the time, 10 ms runs
// always screened 720-772, window by window 676-850). Cheap rules (0.1-0.3 ms per
// window) still get long runs (as many as fit 10 ms, up to Batch), scanned window by
// window (their fixed cost per scan is too small for a screen to pay: screenMinShare).
// RunBudget < 0 restores runs of Batch whatever they cost.
const DefaultRunBudget = 10 * time.Millisecond

// DefaultReusePasses: at the shipped 5 min interval, a block's result stands for at most
// an hour of passes and the block is scanned again at the 13th pass (65 min), for about
// 1/12 of a full pass's CPU per pass.
const DefaultReusePasses = 12

// Driver scans sources block by block and remembers, per block, a content hash and the
// matches found, so that repeated passes only rescan what changed. A Driver belongs to one
// target; a Pass must not run concurrently with another Pass on the same Driver.
//
// Memory: each worker holds Batch window buffers; the change cache holds about 210 bytes per
// non-zero block, matches included (measured: 458 KB after a pass over the 1 GiB bench
// image's 2145 non-zero blocks, 0.08% of non-zero RAM at the default block size); matches
// are bounded per rule.
type Driver struct {
	cfg DriverConfig
	// seed is the change hash's secret xxh3 seed, so that the guest cannot compute the
	// hash of its own blocks. xxh3 is not a cryptographic or keyed hash: a change crafted
	// to collide whatever the seed would go unscanned until the rule set changes (the
	// same class of risk as hash/maphash before it, at 5-10x its speed here).
	seed   uint64
	secret *hashSecret // XXH3's secret for seed (copyHash)
	zero   []byte      // zeroChunk zero bytes to compare with

	mu    sync.Mutex
	cache map[uint64]blockState // by block GPA
	// quiet is what the rule set quietRules reports for a window without any string
	// match (Screener), learnt once by a worker and kept for the others and later
	// passes.
	quiet      []detectors.Match
	quietRules string
	// screenAlways (tests) keeps workers screening whatever it costs.
	screenAlways bool
	// runSent (tests) is told the length of each run the dispatcher hands out.
	runSent func(n int)
	// winNS is the CPU time a run took per window handed to the rule engine (a moving
	// average over the workers' runs with the rule set winRules; 0: not known yet),
	// from which the dispatcher sizes runs (RunBudget).
	winNS    int64
	winRules string
}

type blockState struct {
	hash    uint64
	rules   string
	zero    bool
	matches []detectors.Match // offsets are guest-physical
	// reused counts the passes this result stood for unchanged content; at
	// ReusePasses the block is scanned again whatever its hash.
	reused int
}

// NewDriver returns a driver with cfg's sizes.
func NewDriver(cfg DriverConfig) *Driver {
	if cfg.BlockSize <= 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	if cfg.Overlap < 0 || cfg.Overlap == 0 {
		cfg.Overlap = DefaultOverlap
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.ReusePasses <= 0 {
		cfg.ReusePasses = DefaultReusePasses
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.RunBudget == 0 {
		cfg.RunBudget = DefaultRunBudget
	}
	seed := rand.Uint64()
	return &Driver{
		cfg:    cfg,
		seed:   seed,
		secret: newHashSecret(seed),
		zero:   make([]byte, zeroChunk),
		cache:  make(map[uint64]blockState),
	}
}

// Config returns the effective configuration.
func (d *Driver) Config() DriverConfig { return d.cfg }

// Forget drops the change-detection state (for example when the target changed).
func (d *Driver) Forget() {
	d.mu.Lock()
	d.cache = make(map[uint64]blockState)
	d.mu.Unlock()
}

// PassOptions controls one pass.
type PassOptions struct {
	// Rules returns the rule set to use; it is called before every run of blocks a
	// worker takes (DriverConfig.Batch), so a rule set swapped in by a reload takes
	// effect at the next run.
	Rules func() RuleSet
	// StartAt skips blocks that start below this address (a cursor from an interrupted pass).
	StartAt uint64
	// Progress, if set, is called after each block with bytes done and total bytes.
	Progress func(done, total uint64)
}

// BlockError is a failure to read or scan one block; the pass goes on without it, so
// the block's own bytes [GPA, GPA+Size) went unscanned in this pass (a blind spot).
type BlockError struct {
	GPA  uint64
	Size uint64    // the block's own bytes
	Op   string    // "read", "scan" or "scanner" (creating one)
	At   time.Time // when it failed
	Err  error
}

// Why a block went unscanned (BlockError.Reason).
const (
	ReasonTimeout    = "timeout"    // the rule engine's time limit per block
	ReasonUnreadable = "unreadable" // the memory could not be read (a truncated RAM file, ...)
	ReasonScanError  = "scan-error" // the rule engine failed otherwise
)

func (e BlockError) Error() string {
	return fmt.Sprintf("block %#x-%#x: %s at %s: %v", e.GPA, e.GPA+e.Size, e.Reason(), e.At.UTC().Format(time.RFC3339Nano), e.Err)
}
func (e BlockError) Unwrap() error { return e.Err }

// Reason says why the block went unscanned: ReasonTimeout when the error has a
// Timeout() method reporting true, ReasonUnreadable when reading failed, else
// ReasonScanError.
func (e BlockError) Reason() string {
	var t interface{ Timeout() bool }
	switch {
	case errors.As(e.Err, &t) && t.Timeout():
		return ReasonTimeout
	case e.Op == "read":
		return ReasonUnreadable
	}
	return ReasonScanError
}

func blockError(b block, op string, err error) *BlockError {
	return &BlockError{GPA: b.gpa, Size: uint64(b.size), Op: op, At: time.Now(), Err: err}
}

// PassResult is what a pass found and did.
type PassResult struct {
	// Matches holds one entry per rule that matched, with guest-physical addresses in
	// Strings[i].Offset, sorted by namespace, rule and address.
	Matches []detectors.Match
	// Complete is false when the pass was cancelled; Cursor is then the address of the
	// first block not scanned, to pass as StartAt.
	Complete bool
	Cursor   uint64

	Blocks          int // blocks in the pass
	BlocksZero      int // skipped: all zero
	BlocksUnchanged int // skipped: same content and rule set as the last pass
	BlocksScanned   int // handed to the rule engine
	// BlocksScreened counts, of BlocksScanned, the blocks settled by a batched screen
	// (Screener) with no string match, without a scan of their own.
	BlocksScreened int
	BytesTotal     uint64
	BytesScanned   uint64
	BytesInPlace   uint64 // of BytesScanned: scanned in the source's mapping, without a copy
	Errors         []BlockError
	// Unchanged holds the blocks whose content this pass found the same as the last
	// pass did (reused, or scanned again only because of ReusePasses): what was
	// derived from them then still holds (blockset.go).
	Unchanged *BlockSet
}

type block struct {
	gpa     uint64
	size    int // own bytes
	winSize int // own bytes plus overlap, clipped to the range
}

// eachBlock calls fn for the blocks of ranges in address order, skipping blocks that end
// at or below startAt, until fn returns false. Blocks are generated, not stored, so a
// pass's memory does not grow with the guest's size.
func (d *Driver) eachBlock(ranges []Range, startAt uint64, fn func(block) bool) {
	bs, ov := uint64(d.cfg.BlockSize), uint64(d.cfg.Overlap)
	for _, r := range ranges {
		for off := uint64(0); off < r.Size; off += bs {
			own := min(bs, r.Size-off)
			gpa := r.GPA + off
			if gpa+own <= startAt {
				continue
			}
			if !fn(block{gpa: gpa, size: int(own), winSize: int(min(own+ov, r.Size-off))}) {
				return
			}
		}
	}
}

type blockResult struct {
	b        block
	state    blockState
	scanned  bool
	screened bool // settled by the batched screen, not scanned alone
	same     bool // the content is the same as at the last pass (same hash)
	bytes    int  // handed to the rule engine
	inPlace  bool // scanned in the source's mapping, not in a copy
	err      *BlockError
}

// Pass scans src once. Cancelling ctx stops it after the runs of blocks in flight (at
// most Batch blocks per worker, and about RunBudget of the rule engine's time, or one
// block when a block takes longer); the result then has Complete false and a Cursor. Errors reading or scanning single blocks are collected
// in the result; Pass returns an error only when it could not run at all.
func (d *Driver) Pass(ctx context.Context, src Source, opts PassOptions) (PassResult, error) {
	if opts.Rules == nil {
		return PassResult{}, errors.New("memscan: no rule set")
	}
	ranges, err := normalize(src.Ranges())
	if err != nil {
		return PassResult{}, fmt.Errorf("memory source: %w", err)
	}
	res := PassResult{Unchanged: newBlockSet(ranges, d.cfg.BlockSize)}
	d.eachBlock(ranges, opts.StartAt, func(b block) bool {
		res.Blocks++
		res.BytesTotal += uint64(b.size)
		return true
	})

	jobs := make(chan []block)
	// A worker sends a run's results as one slice: one hand-off per run, not per block.
	results := make(chan []blockResult, 2*d.cfg.Workers)
	var wg sync.WaitGroup
	for range min(d.cfg.Workers, max(res.Blocks, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.worker(src, opts.Rules, jobs, results)
		}()
	}
	// The dispatcher hands out runs of up to Batch adjacent blocks in address order,
	// each sized to RunBudget when it is started (runLimit). Workers finish every block
	// they received, so when results close, exactly the blocks before stoppedAt are done.
	stoppedAt, stopped := uint64(0), false
	go func() {
		defer close(jobs)
		var run []block
		limit := d.runLimit()
		send := func() bool {
			if ctx.Err() == nil {
				select {
				case jobs <- run:
					if d.runSent != nil {
						d.runSent(len(run))
					}
					run = nil
					limit = d.runLimit()
					return true
				case <-ctx.Done():
				}
			}
			stoppedAt, stopped = run[0].gpa, true
			return false
		}
		d.eachBlock(ranges, opts.StartAt, func(b block) bool {
			if n := len(run); n > 0 && (n >= limit || run[n-1].gpa+uint64(run[n-1].size) != b.gpa) {
				if !send() {
					return false
				}
			}
			if ctx.Err() != nil {
				stoppedAt, stopped = b.gpa, true
				if len(run) > 0 {
					stoppedAt = run[0].gpa
				}
				return false
			}
			run = append(run, b)
			return true
		})
		if !stopped && len(run) > 0 {
			send()
		}
	}()
	go func() { wg.Wait(); close(results) }()

	byRule := map[[2]string]*detectors.Match{}
	var bytesDone uint64
	for rs := range results {
		for _, r := range rs {
			bytesDone += uint64(r.b.size)
			if r.same {
				res.Unchanged.add(r.b.gpa)
			}
			switch {
			case r.err != nil:
				res.Errors = append(res.Errors, *r.err)
			case r.state.zero:
				res.BlocksZero++
			case !r.scanned:
				res.BlocksUnchanged++
			default:
				res.BlocksScanned++
				if r.screened {
					res.BlocksScreened++
				}
				res.BytesScanned += uint64(r.bytes)
				if r.inPlace {
					res.BytesInPlace += uint64(r.bytes)
				}
			}
			for _, m := range r.state.matches {
				mergeMatch(byRule, m)
			}
			if opts.Progress != nil {
				opts.Progress(bytesDone, res.BytesTotal)
			}
		}
	}

	// results is closed after close(jobs), which the dispatcher does after its last write.
	res.Complete = !stopped
	res.Cursor = opts.StartAt
	if len(ranges) > 0 {
		res.Cursor = max(res.Cursor, ranges[len(ranges)-1].End())
	}
	if stopped {
		res.Cursor = stoppedAt
	}
	res.Matches = sortedMatches(byRule)
	return res, nil
}

// runLimit is how many blocks the next run may hold: as many as the rule engine is
// expected to get through in RunBudget at the measured time per window, at least 1,
// at most Batch. Before anything is measured with the current rule set, 1.
func (d *Driver) runLimit() int {
	if d.cfg.RunBudget < 0 || d.cfg.Batch <= 1 {
		return d.cfg.Batch
	}
	d.mu.Lock()
	ns := d.winNS
	d.mu.Unlock()
	if ns <= 0 {
		return 1
	}
	return int(min(max(int64(d.cfg.RunBudget)/ns, 1), int64(d.cfg.Batch)))
}

// timeRun records that a run with rule set rulesID took took (the worker's CPU time)
// for n windows handed to the rule engine. The average follows a rise at once when the time per window at
// least doubles (heavier memory, a loaded machine) and otherwise moves a quarter of
// the way, so that one fast run does not lengthen the next ones much. A new rule set
// starts again from nothing.
func (d *Driver) timeRun(rulesID string, took time.Duration, n int) {
	if n <= 0 || took <= 0 {
		return // nothing to learn from (or a clock that cannot be trusted)
	}
	ns := max(int64(took)/int64(n), 1)
	d.mu.Lock()
	switch {
	case d.winRules != rulesID || d.winNS <= 0 || ns >= 2*d.winNS:
		d.winNS, d.winRules = ns, rulesID
	default:
		d.winNS += (ns - d.winNS) / 4
	}
	d.mu.Unlock()
}

// newRules forgets the time per window measured with another rule set, so that the
// runs after a reload start again from 1 block.
func (d *Driver) newRules(rulesID string) {
	d.mu.Lock()
	if d.winRules != rulesID {
		d.winNS, d.winRules = 0, rulesID
	}
	d.mu.Unlock()
}

// Screener is an optional BlockScanner capability (detectors/yara MemoryScanner has
// it): Screen runs the rule set's string matching over many windows in one run of the
// rule engine, wins[i] holding memory from address bases[i] (ascending; a window may
// overlap the next). hit[i] false promises that Scan(wins[i], bases[i]) reports the
// same as for every other window without a hit (what the rule set makes of memory in
// which no string matches: usually nothing), so the driver scans alone only the
// windows with a hit, and settles the others with that result, learnt from the first
// of them it scans alone. An error means: scan each window alone; ErrNoScreen means
// that it will not change for this rule set.
type Screener interface {
	Screen(wins [][]byte, bases []uint64) (hit []bool, err error)
}

// EachScanner is an optional BlockScanner capability: ScanEach scans windows of buf
// alone, window i being buf[offs[i]:offs[i]+lens[i]] at address bases[i], each exactly
// as Scan would, in one call of the rule engine. libyara is reached through cgo, and a
// cgo call of a few hundred microseconds costs the Go runtime tens of microseconds of
// thread hand-offs besides: one call per run instead of one per window.
type EachScanner interface {
	ScanEach(buf []byte, offs, lens []int, bases []uint64) ([][]detectors.Match, []error)
}

// eachGroup is how many windows of a copied source a worker that does not screen copies
// before scanning them in one call (EachScanner): 2 MiB of copies at the default block
// size, taken from the cache when scanned.
const eachGroup = 8

// Go's sysmon takes the P of a goroutine that has run 10 ms without passing through the
// scheduler when it finds it in a cgo call, and after each such retake it polls every
// 20 us for a millisecond or more: about 60 nanosleeps, each two thread switches, per
// retake. A worker doing nothing but long libyara calls was retaken every 10-20 ms
// (1,900 context switches in a 0.7 s scan of 256 MiB against yara's 5). So a worker
// passes through the scheduler (yield) before a rule-engine call that is expected (at
// the measured rate) to end more than yieldBy after its last pass, and a call of
// ScanEach is sized to take about callBudget. Not more often: a yield while the other
// P is idle wakes a thread to look for work (wakep), two thread switches.
const (
	yieldBy    = 8 * time.Millisecond
	callBudget = 4 * time.Millisecond
)

// ErrNoScreen is returned by a Screener that cannot screen for its rule set (its
// conditions may read a window's bytes when no string matches, say).
var ErrNoScreen = errors.New("memscan: rule set cannot be screened")

// worker is one scan goroutine's state: its scanner, re-created when the rule set
// changes, and its buffers.
type worker struct {
	d    *Driver
	src  Source
	sc   BlockScanner
	scr  Screener    // sc's screen, nil when it has none or it cannot screen these rules
	each EachScanner // sc's scan of a run in one call, nil when it has none
	scID string
	// runBuf holds every pending window of the run in hand (the source's view, or buf),
	// for ScanEach's offsets; nil: scan them one by one.
	runBuf []byte
	// quiet is what sc reports for a window without any string match (Screener),
	// once learnt from a window the screen passed that was scanned alone.
	quiet   []detectors.Match
	quietOK bool
	buf     []byte // a window per block of a run, for sources that are copied
	hs      *xxh3.Hasher
	pend    []pending
	wins    [][]byte
	bases   []uint64
	// Whether the screen pays: its time per byte against scanning alone (learning,
	// hits and a probe every probeEvery screens). When it does not, the worker scans
	// window by window for the next skipRuns runs (a copied source keeps each copy in
	// the cache while libyara scans it).
	screenNS, screenBytes, aloneNS, aloneBytes int64
	screens, skip                              int
	// screening: the run in hand is screened when it holds more than one window and
	// the rule set's fixed cost per scan can pay for it (fixedNS, aloneRate).
	screening bool
	// fixedNS is the rule engine's fixed cost per scan with this scanner (a scan of a
	// few bytes, measured before its first screen; 0: not yet), aloneRate its time
	// per byte of a window scanned alone (the least seen, as the first scans pay for
	// cold caches, and under valgrind for translating the code; 0: not known yet).
	fixedNS   int64
	aloneRate float64
	// screenWins and hitWins count the windows screened and those with a hit since
	// the judge last decided; screenRuns the screens.
	screenWins, hitWins, screenRuns int
	screenWinBytes                  int64
	// windows counts the windows handed to the rule engine (timeRun).
	windows int
	// runCPU is the CPU time of the run in hand up to mark (threadCPU when it was
	// read); yielded when the worker last passed through the scheduler (yield).
	runCPU, mark, yielded time.Duration
	// out collects the results of the run in hand.
	out []blockResult
	// kinds is the run's windows' (setKinds); firsts where each one's first data lies.
	kinds, firsts []int
}

const (
	probeEvery = 16
	skipRuns   = 32
)

// pending is a block to hand to the rule engine: its window, zero pages at the edges
// trimmed (lo bytes cut at the start), and what the change cache knew of it.
type pending struct {
	b       block
	win     []byte
	lo      int
	h       uint64
	prev    blockState
	had     bool
	inPlace bool
}

// worker scans runs of blocks with its own scanner, re-created when the rule set changes.
// Its runs and scans are timed in CPU time (threadCPU), so that the run length
// (RunBudget) and whether the screen pays (judge) follow the work, not the machine's
// load: a run as the sum of its stretches between yields, each kept to one thread
// (LockOSThread; unlocked to yield, as a locked goroutine that yields costs two thread
// switches).
func (d *Driver) worker(src Source, rules func() RuleSet, jobs <-chan []block, results chan<- []blockResult) {
	w := &worker{d: d, src: src, hs: xxh3.NewSeed(d.seed)}
	defer func() {
		if w.sc != nil {
			w.sc.Close()
		}
	}()
	for run := range jobs {
		rs := rules()
		if w.sc == nil || rs.ID() != w.scID {
			if w.sc != nil {
				w.sc.Close()
				w.sc = nil
			}
			sc, err := rs.NewScanner()
			if err != nil {
				out := make([]blockResult, 0, len(run))
				for _, b := range run {
					out = append(out, blockResult{b: b, err: blockError(b, "scanner", fmt.Errorf("creating scanner: %w", err))})
				}
				results <- out
				continue
			}
			w.sc, w.scID, w.quiet, w.quietOK = sc, rs.ID(), nil, false
			w.fixedNS, w.aloneRate, w.screens = 0, 0, 0
			w.scr, _ = sc.(Screener)
			w.each, _ = sc.(EachScanner)
			d.newRules(w.scID)
		}
		// The run is timed in CPU time, stretch by stretch (yield), and its results
		// are sent at once. Handing a run over readied the dispatcher and the
		// results' reader on this P: they run now, not beside a cgo call (where a
		// P with goroutines waiting is retaken).
		runtime.Gosched()
		n := w.windows
		runtime.LockOSThread()
		w.runCPU, w.mark, w.yielded = 0, threadCPU(), monotonic()
		w.out = make([]blockResult, 0, len(run))
		w.run(run)
		d.timeRun(w.scID, w.runCPU+threadCPU()-w.mark, w.windows-n)
		runtime.UnlockOSThread()
		results <- w.out
		w.out = nil
	}
}

// run handles a run of adjacent blocks: each is settled when zero or unchanged, the
// others are screened together and scanned alone where the screen finds a string (or
// when there is no screen). A source whose mapping cannot fault (inPlacer) is, when the
// driver is configured InPlace, viewed once for the whole run and scanned where it lies,
// with no copy; otherwise each window to scan is copied, a window per slot of buf, and
// the copy is both what is hashed and what is scanned.
func (w *worker) run(run []block) {
	d := w.d
	w.screening = w.scr != nil && w.skip == 0
	if w.skip > 0 {
		w.skip--
	}
	if w.screening && !d.screenAlways && w.fixedNS > 0 && w.aloneRate > 0 &&
		float64(w.fixedNS) < screenMinShare*w.aloneRate*float64(d.cfg.BlockSize+d.cfg.Overlap) {
		// The screen cannot pay (screenPays): window by window, so that a copy is
		// scanned while it is in the cache.
		w.screening = false
	}
	w.setKinds(run)
	sparse := false
	for _, k := range w.kinds {
		sparse = sparse || (k != winData && k != 0)
	}
	if v, ok := w.src.(viewer); ok && !sparse {
		if ip, ok := w.src.(inPlacer); ok && ip.InPlace() && d.cfg.InPlace {
			first, last := run[0], run[len(run)-1]
			done := 0
			err := v.View(int64(first.gpa), int(last.gpa-first.gpa)+last.winSize, func(mem []byte) {
				w.pend = w.pend[:0]
				for i, b := range run {
					off := int(b.gpa - first.gpa)
					if w.kinds[i] == 0 {
						w.out = append(w.out, d.zeroBlock(b))
					} else if r, p, scan := d.prepareInPlace(w.scID, b, mem[off:off+b.winSize]); scan {
						w.pend = append(w.pend, p)
					} else {
						w.out = append(w.out, r)
					}
					done++
				}
				w.runBuf = mem
				w.scan()
				w.runBuf = nil
			})
			if err == nil || done > 0 {
				w.judge()
				return
			}
			// Not one extent: block by block, each copied below.
		}
	}
	w.pend = w.pend[:0]
	slot := d.cfg.BlockSize + d.cfg.Overlap
	if !w.screening && w.each != nil && len(run) > 1 {
		// Groups of eachGroup windows, copied and then scanned in one call (each copy
		// is still in the cache when it is scanned).
		if need := min(len(run), eachGroup) * slot; need > len(w.buf) {
			w.buf = make([]byte, need)
		}
		flush := func() {
			if len(w.pend) > 0 {
				w.runBuf = w.buf
				w.scan()
				w.runBuf, w.pend = nil, w.pend[:0]
			}
		}
		for i, b := range run {
			k := len(w.pend)
			if w.kinds[i] == 0 {
				w.out = append(w.out, d.zeroBlock(b))
			} else if r, p, scan := d.prepare(w.src, w.scID, b, w.buf[k*slot:(k+1)*slot], w.hs, w.kinds[i]); scan {
				if w.pend = append(w.pend, p); len(w.pend) == eachGroup {
					flush()
				}
			} else {
				w.out = append(w.out, r)
			}
		}
		flush()
		return
	}
	if !w.screening {
		// Window by window: each copy is scanned while it is in the cache.
		if slot > len(w.buf) {
			w.buf = make([]byte, slot)
		}
		for i, b := range run {
			if w.kinds[i] == 0 {
				w.out = append(w.out, d.zeroBlock(b))
			} else if r, p, scan := d.prepare(w.src, w.scID, b, w.buf[:slot], w.hs, w.kinds[i]); scan {
				w.pend = append(w.pend[:0], p)
				w.scan()
			} else {
				w.out = append(w.out, r)
			}
		}
		return
	}
	if need := len(run) * slot; need > len(w.buf) {
		w.buf = make([]byte, need)
	}
	for i, b := range run {
		if w.kinds[i] == 0 {
			w.out = append(w.out, d.zeroBlock(b))
		} else if r, p, scan := d.prepare(w.src, w.scID, b, w.buf[i*slot:(i+1)*slot], w.hs, w.kinds[i]); scan {
			w.pend = append(w.pend, p)
		} else {
			w.out = append(w.out, r)
		}
	}
	w.runBuf = w.buf
	w.scan()
	w.runBuf = nil
	w.judge()
}

// What of a window is read, for a source with holes (holer): a part that is one hole
// is zeros and not read.
const (
	readOwn     = 1 << iota // the block's own bytes
	readOverlap             // the overlap, the next block's first bytes
	winData     = readOwn | readOverlap
)

// setKinds tells, for each block of run, which parts of its window are read (holer):
// none when the window is one hole, and not a part that is one hole. Reading a hole
// would store it (tmpfs), and a stored page is data from then on: reading an overlap
// that is a hole would make the next block look like data, and the own bytes of a
// block whose data lies only in its overlap would make the block before look like data
// at the next pass, and so on through a guest's untouched memory. Holes amid a block's
// own data are read (and stored) with it: at most a block.
//
// Each window's first data is asked once (an lseek), together for the run; a block's
// overlap is the next block's first bytes, so its answer is the next block's when that
// block follows in the run (one lseek per block, not two: 2,047 of them were 1.5% of a
// pass over a dense 256 MiB RAM file).
func (w *worker) setKinds(run []block) {
	w.kinds = w.kinds[:0]
	h, ok := w.src.(holer)
	if !ok {
		for range run {
			w.kinds = append(w.kinds, winData)
		}
		return
	}
	w.firsts = w.firsts[:0]
	for _, b := range run {
		w.firsts = append(w.firsts, h.FirstData(b.gpa, b.winSize))
	}
	for i, b := range run {
		first, k := w.firsts[i], winData
		switch {
		case first >= b.winSize:
			k = 0
		case first >= b.size:
			k = readOverlap
		case b.winSize > b.size:
			n := b.winSize - b.size
			var ov int
			if i+1 < len(run) && run[i+1].gpa == b.gpa+uint64(b.size) && run[i+1].winSize >= n {
				// the next window starts where the overlap does and is at least as long
				ov = min(w.firsts[i+1], n)
			} else {
				ov = h.FirstData(b.gpa+uint64(b.size), n)
			}
			if ov >= n {
				k = readOwn
			}
		}
		w.kinds = append(w.kinds, k)
	}
}

// zeroBlock is the result for a block found all zero, which keeps no cache entry.
func (d *Driver) zeroBlock(b block) blockResult {
	d.forget(b.gpa)
	return blockResult{b: b, state: blockState{zero: true}}
}

// judge turns the screen off for a while (skipRuns runs) when, in this worker, it
// does not pay:
//   - a run of n windows screened saves n-1 fixed costs per scan and scans every
//     window with a hit once more, so it pays only while the share of windows with a
//     hit stays below the fixed cost's share of a window's time alone, times 1-1/n
//     (counted over at least 8 screened windows; the two times as screenPays
//     measures them, the share of hits as the screens find them);
//   - or it cost more per byte than scanning alone (a copied run has left the cache
//     when libyara reads it), timed from the second screen with the scanner on.
//
// Rule sets whose fixed cost per scan is too small for the screen ever to pay are not
// screened at all (screenPays).
func (w *worker) judge() {
	if w.d.screenAlways {
		return
	}
	if w.screenWins >= 8 && w.aloneRate > 0 {
		win := float64(w.screenWinBytes) / float64(w.screenWins)
		run := float64(w.screenWins) / float64(w.screenRuns)
		saves := float64(w.fixedNS) / (w.aloneRate * win) * (1 - 1/run)
		if float64(w.hitWins)/float64(w.screenWins) >= saves {
			w.skip = skipRuns
		}
		w.screenWins, w.hitWins, w.screenRuns, w.screenWinBytes = 0, 0, 0, 0
	}
	if w.screenBytes < 8*int64(w.d.cfg.BlockSize) || w.aloneBytes < int64(w.d.cfg.BlockSize)/2 {
		return
	}
	if w.screens == 1 {
		// The first screen and scans pay for cold caches: judged from the next.
		w.screenNS, w.screenBytes, w.aloneNS, w.aloneBytes = 0, 0, 0, 0
		return
	}
	if float64(w.screenNS)/float64(w.screenBytes) >= float64(w.aloneNS)/float64(w.aloneBytes) {
		w.skip = skipRuns
	}
	w.screenNS, w.screenBytes, w.aloneNS, w.aloneBytes = 0, 0, 0, 0
}

// screenMinShare: a run is screened only when the rule engine's fixed cost per scan
// (what the screen saves per window) is at least this share of a window's time
// alone. Every window with a hit is scanned twice, so a screen saving less than 5% per
// window loses as soon as 1 window in 20 has a hit. In CPU time here, per 256 KiB
// window: 5 literal rules 0.3% (2.7 us of 1.0 ms), the bench's 128 rules 0.7%,
// elastic's 3,021 rules 13-15% (0.3-0.4 of 2-3 ms); under valgrind, which slows
// condition evaluation more than string search, 128 rules 2.6% and elastic's 27%. The
// judge decides the rest by the share of windows with a hit.
const screenMinShare = 0.05

// screenPays says whether screening the pending windows can pay: the fixed cost per
// scan against the time of a window alone, both measured with this scanner (the first
// by a scan of a few bytes, once).
func (w *worker) screenPays() bool {
	if w.d.screenAlways {
		return true
	}
	if w.fixedNS == 0 {
		w.measureFixed()
	}
	if w.scr == nil {
		return false
	}
	n := 0
	for _, p := range w.pend {
		n += len(p.win)
	}
	return float64(w.fixedNS) >= screenMinShare*w.aloneRate*float64(n)/float64(len(w.pend))
}

// measureFixed measures the rule engine's fixed cost per scan (fixedNS): the faster of
// a screen and a scan of a few zero bytes at the first pending window's address (with
// elastic's rules each costs a fifth of a window; the first pays for code and data not
// yet in the caches). When the screen passes those bytes and the scan reports no
// string match, the scan's result is what the rule set reports for every window the
// screen passes (Screener), quiet, learnt without scanning a whole window twice; the
// first screen's probe then checks it against a window of memory.
func (w *worker) measureFixed() {
	var few [16]byte
	base := w.pend[0].b.gpa + uint64(w.pend[0].lo)
	w.fixedNS = 1 << 62
	t0 := threadCPU()
	hit, err := w.scr.Screen([][]byte{few[:]}, []uint64{base})
	took := max(int64(threadCPU()-t0), 1)
	if errors.Is(err, ErrNoScreen) {
		w.scr = nil
		return
	}
	t0 = threadCPU()
	ms, serr := w.sc.Scan(few[:], base)
	if serr != nil {
		return // cannot tell: leave it to the judge
	}
	w.fixedNS = max(int64(threadCPU()-t0), 1)
	if err != nil {
		return
	}
	w.fixedNS = min(w.fixedNS, took)
	if len(hit) == 1 && !hit[0] && !hasStrings(ms) && !w.quietOK {
		w.quiet, w.quietOK = cloneMatches(ms), true
		w.d.mu.Lock()
		w.d.quiet, w.d.quietRules = w.quiet, w.scID
		w.d.mu.Unlock()
	}
}

// scan hands the pending windows to the rule engine: screened in one run when the
// scanner can and the screen may pay (screenPays, judge), then alone where the
// screen found a string, or each alone. Before its first screen, a worker scans a
// window alone to know the time per byte the screen is weighed against.
func (w *worker) scan() {
	if w.screening && len(w.pend) > 1 {
		var n int
		for _, p := range w.pend {
			n += len(p.win)
		}
		w.yield(n) // the screen is one call
	}
	w.windows += len(w.pend)
	pend := w.pend
	var hit []bool
	if w.screening && w.scr != nil && len(pend) > 1 {
		if w.aloneRate == 0 && !w.d.screenAlways {
			w.scanAlone(pend[0], false)
			pend = pend[1:]
		}
		if len(pend) > 1 && w.screenPays() {
			hit = w.screen(pend)
		}
	}
	if hit != nil && !w.quietOK {
		w.d.mu.Lock()
		if w.d.quietRules == w.scID {
			w.quiet, w.quietOK = w.d.quiet, true
		}
		w.d.mu.Unlock()
	}
	probe := hit != nil && w.screens%probeEvery == 1
	var each map[int]eachResult
	if w.each != nil && w.runBuf != nil {
		each = w.scanEach(pend, hit)
	}
	for i, p := range pend {
		passed := hit != nil && !hit[i]
		if r, ok := each[i]; ok {
			w.out = append(w.out, w.d.finish(w.scID, p, r.ms, r.err, false))
			continue
		}
		if passed && w.quietOK && !probe {
			w.out = append(w.out, w.d.finish(w.scID, p, cloneMatches(w.quiet), nil, true))
			continue
		}
		if passed && w.quietOK {
			probe = false
		}
		w.yield(len(p.win))
		w.scanAlone(p, passed)
	}
	clear(w.pend)
}

// screen screens pend in one run of the rule engine and returns the windows with a
// hit, or nil when it cannot.
func (w *worker) screen(pend []pending) []bool {
	w.wins, w.bases = w.wins[:0], w.bases[:0]
	for _, p := range pend {
		w.wins = append(w.wins, p.win)
		w.bases = append(w.bases, p.b.gpa+uint64(p.lo))
	}
	t0 := threadCPU()
	got, err := w.scr.Screen(w.wins, w.bases)
	w.screenNS += int64(threadCPU() - t0)
	var n int64
	for _, win := range w.wins {
		n += int64(len(win))
	}
	w.screenBytes += n
	w.screens++
	clear(w.wins) // do not keep the windows' memory reachable
	switch {
	case errors.Is(err, ErrNoScreen):
		w.scr = nil
	case err == nil && len(got) == len(pend):
		w.screenWins += len(got)
		w.screenRuns++
		w.screenWinBytes += n
		for _, h := range got {
			if h {
				w.hitWins++
			}
		}
		return got
	}
	return nil
}

// eachResult is a window's result from ScanEach.
type eachResult struct {
	ms  []detectors.Match
	err error
}

// scanEach scans the windows of pend that must be scanned alone and that the screen
// did not pass (all of them without a screen: hit nil) in one call (EachScanner),
// when there are two or more and all lie in runBuf; it returns their results by index
// in pend (nil: scan them one by one). The windows the screen passed keep scanAlone's
// learning and probes.
func (w *worker) scanEach(pend []pending, hit []bool) map[int]eachResult {
	var idx, offs, lens []int
	var bases []uint64
	var n int64
	lo, hi := uintptr(unsafe.Pointer(unsafe.SliceData(w.runBuf))), uintptr(len(w.runBuf))
	for i, p := range pend {
		if hit != nil && !hit[i] {
			continue
		}
		if len(p.win) == 0 {
			return nil
		}
		off := uintptr(unsafe.Pointer(unsafe.SliceData(p.win))) - lo
		if off >= hi || off+uintptr(len(p.win)) > hi {
			return nil // not in runBuf (cannot happen: windows are views of it)
		}
		idx, offs, lens = append(idx, i), append(offs, int(off)), append(lens, len(p.win))
		bases = append(bases, p.b.gpa+uint64(p.lo))
		n += int64(len(p.win))
	}
	if len(idx) < 2 {
		return nil
	}
	res := make(map[int]eachResult, len(idx))
	perWin := float64(n) / float64(len(idx)) // bytes
	for len(idx) > 0 {
		// As many windows as the rule engine is expected to get through in
		// callBudget (all of them before a rate is known), at least 2.
		k := len(idx)
		if w.aloneRate > 0 {
			k = min(k, max(int(float64(callBudget)/max(w.aloneRate*perWin, 1)), 2))
		}
		if len(idx)-k == 1 {
			k++ // not one window left over for a call of its own
		}
		w.yield(int(float64(k) * perWin))
		t0 := threadCPU()
		outs, errs := w.each.ScanEach(w.runBuf, offs[:k], lens[:k], bases[:k])
		took := int64(threadCPU() - t0)
		if len(outs) != k || len(errs) != k {
			if len(res) == 0 {
				return nil
			}
			break // the rest one by one
		}
		var got int64
		for _, l := range lens[:k] {
			got += int64(l)
		}
		if r := float64(took) / float64(got); r > 0 && (w.aloneRate == 0 || r < w.aloneRate) {
			w.aloneRate = r
		}
		if w.skip == 0 { // for judge: windows scanned alone while screening
			w.aloneNS += took
			w.aloneBytes += got
		}
		for j, i := range idx[:k] {
			res[i] = eachResult{ms: outs[j], err: errs[j]}
		}
		idx, offs, lens, bases = idx[k:], offs[k:], lens[k:], bases[k:]
	}
	return res
}

// yield passes through the scheduler (see yieldBy) when a call over n bytes would end
// more than yieldBy after the worker's last pass (always while the rate is not known),
// adding the stretch before it to the run's CPU time.
func (w *worker) yield(n int) {
	expect := yieldBy
	if w.aloneRate > 0 {
		expect = time.Duration(w.aloneRate * float64(n))
	}
	if now := monotonic(); now-w.yielded+expect >= yieldBy {
		w.runCPU += threadCPU() - w.mark
		runtime.UnlockOSThread()
		runtime.Gosched()
		runtime.LockOSThread()
		w.mark, w.yielded = threadCPU(), monotonic()
	}
}

// scanAlone scans a pending window alone and records its result; passed: the screen
// found no hit in it (learning what the rule set reports without string matches, or
// a probe checking that).
func (w *worker) scanAlone(p pending, passed bool) {
	t0 := threadCPU()
	ms, err := w.sc.Scan(p.win, p.b.gpa+uint64(p.lo))
	took := int64(threadCPU() - t0)
	if r := float64(took) / float64(max(len(p.win), 1)); r > 0 && (w.aloneRate == 0 || r < w.aloneRate) {
		w.aloneRate = r
	}
	if w.skip == 0 { // for judge: windows scanned alone while screening
		w.aloneNS += took
		w.aloneBytes += int64(len(p.win))
	}
	switch {
	case passed && w.quietOK:
		// A probe: a passed window scanned alone, to time it (judge) and to check
		// the Screener's promise.
		if hasStrings(ms) || !reflect.DeepEqual(ms, w.quiet) {
			w.scr = nil
		}
	case passed && err == nil:
		// The first window the screen passed, scanned alone: what the rule set
		// reports for memory without string matches. A string match here would
		// break the Screener's promise: stop screening rather than trust it.
		if hasStrings(ms) {
			w.scr = nil
		} else {
			w.quiet, w.quietOK = cloneMatches(ms), true
			w.d.mu.Lock()
			w.d.quiet, w.d.quietRules = w.quiet, w.scID
			w.d.mu.Unlock()
		}
	}
	w.out = append(w.out, w.d.finish(w.scID, p, ms, err, false))
}

func hasStrings(ms []detectors.Match) bool {
	for _, m := range ms {
		if len(m.Strings) > 0 {
			return true
		}
	}
	return false
}

// cloneMatches copies matches without string matches (a screened window's result) so
// that no two blocks share a match's tags or metadata.
func cloneMatches(ms []detectors.Match) []detectors.Match {
	if len(ms) == 0 {
		return nil
	}
	out := make([]detectors.Match, len(ms))
	for i, m := range ms {
		m.Tags = append([]string(nil), m.Tags...)
		if m.Meta != nil {
			meta := make(map[string]string, len(m.Meta))
			for k, v := range m.Meta {
				meta[k] = v
			}
			m.Meta = meta
		}
		out[i] = m
	}
	return out
}

// zeroChunk is how many bytes are copied, zero-tested and hashed at a time, so that each
// piece is tested and hashed while it is still in the cache.
const zeroChunk = 64 << 10

// viewer is an optional Source capability (MappedFile has it): View calls fn with the
// bytes at [gpa, gpa+n) in place and turns a memory fault while fn runs into an error.
type viewer interface {
	View(gpa int64, n int, fn func([]byte)) error
}

// holer is an optional Source capability (MappedFile has it): FirstData tells where
// the first data lies in a range of a sparse file; a hole reads as zeros and is not
// read (reading would store it).
type holer interface {
	FirstData(gpa uint64, n int) int
}

// inPlacer is an optional Source capability (MappedFile has it): InPlace reports that
// View's bytes cannot fault, so they may be handed to the rule engine (C code) in place.
type inPlacer interface {
	InPlace() bool
}

// cached returns the change cache's entry for b and whether it may stand for b's
// content (same rule set, reuse allowance left).
func (d *Driver) cached(b block, rulesID string) (prev blockState, had, cached bool) {
	d.mu.Lock()
	prev, had = d.cache[b.gpa]
	d.mu.Unlock()
	return prev, had, had && !prev.zero && prev.rules == rulesID && prev.reused < d.cfg.ReusePasses
}

// prepare settles block b when it is zero, unchanged or unreadable (scan false), or
// returns its window to scan. A zero or unchanged block is recognised in place when
// the source allows it (no copy: the unchanged pass reads each byte once); a block to
// scan is copied into buf and hashed in the same pass (read), and the copy is what
// libyara scans and what the cached hash describes.
func (d *Driver) prepare(src Source, rulesID string, b block, buf []byte, hs *xxh3.Hasher, parts int) (r blockResult, p pending, scan bool) {
	prev, had, cached := d.cached(b, rulesID)
	if v, ok := src.(viewer); ok && parts == winData {
		var zero, same bool
		err := v.View(int64(b.gpa), b.winSize, func(win []byte) {
			if zero = d.allZero(win); zero || !cached {
				return
			}
			same = xxh3.HashSeed(win, d.seed) == prev.hash
		})
		switch {
		case err != nil: // read (and report) it below
		case zero:
			d.forget(b.gpa)
			return blockResult{b: b, state: blockState{zero: true}}, p, false
		case same:
			return d.reuse(b, prev), p, false
		}
	}
	win, h, zero, err := d.read(src, b, buf, hs, parts)
	if err != nil {
		return blockResult{b: b, err: blockError(b, "read", fmt.Errorf("reading: %w", err))}, p, false
	}
	return d.pend(b, win, h, zero, prev, had, cached, false)
}

// prepareInPlace is prepare for a window in a mapping that cannot fault: it is hashed
// and zero-tested where it lies, and scanned there.
func (d *Driver) prepareInPlace(rulesID string, b block, win []byte) (r blockResult, p pending, scan bool) {
	prev, had, cached := d.cached(b, rulesID)
	if d.allZero(win) {
		return d.pend(b, win, 0, true, prev, had, cached, true)
	}
	return d.pend(b, win, xxh3.HashSeed(win, d.seed), false, prev, had, cached, true)
}

// read copies b's window into buf, hashing it as it is copied (copyHash) when the
// source can be viewed in place, else hashing and zero-testing each piece as it is
// copied (ReadAt). If the window cannot be read, it falls back to the block's own bytes: the overlap may
// be what is unreadable (the next block lies past the end of a truncated RAM file), and
// only what really cannot be read is reported unscanned.
//
// Copying, rather than handing libyara a view of the mapping, is what keeps a shrinking
// RAM file from killing the supervisor: libyara would take a SIGBUS, while ReadAt turns
// the fault into an error for this block.
//
// Only the parts of the window in parts are read (setKinds); the others are one hole each,
// zeros.
func (d *Driver) read(src Source, b block, buf []byte, hs *xxh3.Hasher, parts int) (win []byte, h uint64, zero bool, err error) {
	if v, ok := src.(viewer); ok && parts == winData {
		// Copied and hashed in one pass under View's fault guard: a fault (the file
		// shrank) is an error, and the pieces below find what can still be read.
		win = buf[:b.winSize]
		if v.View(int64(b.gpa), b.winSize, func(mem []byte) { h = copyHash(win, mem, d.seed, d.secret) }) == nil {
			return win, h, d.allZero(win), nil
		}
	}
	sizes := []int{b.winSize}
	if b.winSize > b.size {
		sizes = append(sizes, b.size)
	}
	for i, n := range sizes {
		win, zero = buf[:n], true
		hs.Reset()
		for off, next := 0, 0; off < n && err == nil; off = next {
			// Pieces of zeroChunk, the last one with the rest (the overlap).
			if next = off + zeroChunk; n-next < zeroChunk {
				next = n
			}
			c := win[off:next]
			// c's own bytes are c[:cut], its overlap bytes c[cut:].
			cut := min(max(b.size-off, 0), len(c))
			for _, part := range [2]struct {
				p    []byte
				at   int
				read bool
			}{{c[:cut], off, parts&readOwn != 0}, {c[cut:], off + cut, parts&readOverlap != 0}} {
				switch {
				case len(part.p) == 0 || err != nil:
				case part.read:
					_, err = src.ReadAt(part.p, int64(b.gpa)+int64(part.at))
				default:
					clear(part.p)
				}
			}
			if err == nil {
				zero = zero && d.allZero(c)
				hs.Write(c)
			}
		}
		if err == nil || i == len(sizes)-1 {
			break
		}
		err = nil
	}
	return win, hs.Sum64(), zero, err
}

// allZero reports whether b holds only zero bytes.
func (d *Driver) allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), zeroChunk)
		if !bytes.Equal(b[:n], d.zero[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// pend settles a zero or unchanged window, or returns it, trimmed, to scan.
func (d *Driver) pend(b block, win []byte, h uint64, zero bool, prev blockState, had, cached, inPlace bool) (blockResult, pending, bool) {
	if zero {
		// Zero blocks keep no cache entry: checking for zeros costs no more than hashing.
		d.forget(b.gpa)
		return blockResult{b: b, state: blockState{zero: true}}, pending{}, false
	}
	if cached && prev.hash == h {
		return d.reuse(b, prev), pending{}, false
	}
	// Leading and trailing zero pages carry nothing to match: hand YARA only the span
	// between the first and last non-zero page.
	lo, hi := d.trimZeroPages(win)
	return blockResult{}, pending{b: b, win: win[lo:hi], lo: lo, h: h, prev: prev, had: had, inPlace: inPlace}, true
}

// finish records the rule engine's result for a pending window.
func (d *Driver) finish(rulesID string, p pending, ms []detectors.Match, err error, screened bool) blockResult {
	b := p.b
	// A fresh result starts part-way through its reuse allowance, by block, so that
	// the rescans of unchanged memory spread evenly over the passes.
	st := blockState{hash: p.h, rules: rulesID, matches: ownMatches(ms, b, p.lo),
		reused: int(b.gpa/uint64(d.cfg.BlockSize)) % d.cfg.ReusePasses}
	r := blockResult{b: b, state: st, scanned: true, screened: screened, bytes: len(p.win),
		inPlace: p.inPlace, same: p.had && !p.prev.zero && p.prev.hash == p.h}
	if p.inPlace {
		// The engine read the live mapping, not the bytes p.h describes: this result
		// must not stand for "unchanged" content next pass (DriverConfig.InPlace).
		st.reused = d.cfg.ReusePasses
	}
	if err != nil {
		// Keep what was found, but do not cache: the block is scanned again next pass.
		d.forget(b.gpa)
		r.err = blockError(b, "scan", fmt.Errorf("scanning: %w", err))
		return r
	}
	d.store(b.gpa, st)
	return r
}

// reuse returns prev for a block whose content is unchanged, counting the reuse.
func (d *Driver) reuse(b block, prev blockState) blockResult {
	prev.reused++
	d.store(b.gpa, prev)
	return blockResult{b: b, state: prev, same: true}
}

// trimZeroPages returns the bounds of win without its leading and trailing all-zero pages.
func (d *Driver) trimZeroPages(win []byte) (lo, hi int) {
	const pg = 4096
	hi = len(win)
	for lo+pg <= hi && bytes.Equal(win[lo:lo+pg], d.zero[:pg]) {
		lo += pg
	}
	for hi-pg >= lo {
		start := hi - pg
		if rem := hi % pg; rem != 0 {
			start = hi - rem
		}
		if !bytes.Equal(win[start:hi], d.zero[:hi-start]) {
			break
		}
		hi = start
	}
	return lo, hi
}

func (d *Driver) store(gpa uint64, st blockState) {
	d.mu.Lock()
	d.cache[gpa] = st
	d.mu.Unlock()
}

func (d *Driver) forget(gpa uint64) {
	d.mu.Lock()
	delete(d.cache, gpa)
	d.mu.Unlock()
}

// ownMatches keeps the string matches that start inside the block's own bytes (matches
// starting in the overlap belong to the next block) and turns offsets into addresses.
// A rule whose every string match lies in the overlap is dropped; a rule without string
// matches (a pure condition) is kept, without an address.
func ownMatches(ms []detectors.Match, b block, lo int) []detectors.Match {
	var out []detectors.Match
	for _, m := range ms {
		had := len(m.Strings)
		var kept []detectors.StringMatch
		for _, s := range m.Strings {
			s.Offset += uint64(lo)
			if s.Offset < uint64(b.size) {
				s.Offset += b.gpa
				kept = append(kept, s)
			}
		}
		if had > 0 && len(kept) == 0 {
			continue
		}
		m.Strings = kept
		out = append(out, m)
	}
	return out
}

// MaxAddressesPerRule bounds the addresses kept per rule in one pass; the others are
// counted in the match's Cut, as are those the rule engine did not keep per window.
const MaxAddressesPerRule = 1024

func mergeMatch(byRule map[[2]string]*detectors.Match, m detectors.Match) {
	k := [2]string{m.Namespace, m.Rule}
	cur, ok := byRule[k]
	if !ok {
		c := m
		c.Strings = append([]detectors.StringMatch(nil), m.Strings[:min(len(m.Strings), MaxAddressesPerRule)]...)
		c.Cut += len(m.Strings) - len(c.Strings)
		byRule[k] = &c
		return
	}
	cur.Cut += m.Cut
	for i, s := range m.Strings {
		if len(cur.Strings) >= MaxAddressesPerRule {
			cur.Cut += len(m.Strings) - i
			break
		}
		cur.Strings = append(cur.Strings, s)
	}
}

func sortedMatches(byRule map[[2]string]*detectors.Match) []detectors.Match {
	out := make([]detectors.Match, 0, len(byRule))
	for _, m := range byRule {
		sort.Slice(m.Strings, func(i, j int) bool {
			if m.Strings[i].Offset != m.Strings[j].Offset {
				return m.Strings[i].Offset < m.Strings[j].Offset
			}
			return m.Strings[i].Name < m.Strings[j].Name
		})
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Rule < out[j].Rule
	})
	return out
}

var monoStart = time.Now()

// monotonic is the time since the process started, on the monotonic clock.
func monotonic() time.Duration { return time.Since(monoStart) }
