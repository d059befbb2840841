package integrity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/domainm/domainm/diskscan"
)

// FS is what Collect needs of a filesystem; diskscan.FS has it.
type FS interface {
	Walk(ctx context.Context, root string, fn func(path string, e *diskscan.Entry, err error) error) error
	Open(path string) (io.ReadCloser, error)
}

// Counters are updated while Collect runs, from several goroutines, so that a caller
// can show progress by polling them.
type Counters struct {
	Entries atomic.Int64 // entries walked (selected or not)
	Records atomic.Int64 // records produced
	Hashed  atomic.Int64 // files whose content was hashed
	Bytes   atomic.Int64 // content bytes hashed
}

// Options tune Collect.
type Options struct {
	Workers int // parallel hashing workers; 0 means one per CPU
	// Baseline, when checking, gives the previous record of a path: it lets
	// trust_metadata selections reuse hashes, growing files compare their old prefix,
	// and the setuid sweep follow a file that lost its setuid bit.
	Baseline func(path string) *Record
	Counters *Counters
	Log      *slog.Logger
}

// Stats summarise a Collect run.
type Stats struct {
	Entries int64 `json:"entries"` // entries walked
	Records int64 `json:"records"` // records emitted
	Hashed  int64 `json:"hashed"`  // files hashed
	Bytes   int64 `json:"bytes"`   // bytes hashed
	Reused  int64 `json:"reused"`  // hashes reused from the baseline (trust_metadata)
	Errors  int64 `json:"errors"`  // entries that could not be read (selected or not)
}

// queueLen bounds the records in flight between the walk and emit: memory stays
// bounded however large the filesystem is.
const queueLen = 1024

const hashBufSize = 1 << 20

type slot struct {
	rec    *Record
	prefix int64 // growing files: hash this many leading bytes separately; -1 none
	hash   bool  // content must be hashed
	done   chan struct{}
}

// Collect walks fsys from "/", turns every entry the policy selects into a Record
// (hashing contents on opt.Workers goroutines) and calls emit with the records in walk
// order, from one goroutine. A path that cannot be read becomes a Record with Err set;
// the walk goes on. Collect stops at the first error from emit or the walk itself.
func Collect(ctx context.Context, fsys FS, p *Policy, opt Options, emit func(*Record) error) (Stats, error) {
	if opt.Workers <= 0 {
		opt.Workers = runtime.NumCPU()
	}
	if opt.Counters == nil {
		opt.Counters = &Counters{}
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Baseline == nil {
		opt.Baseline = func(string) *Record { return nil }
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c := &collector{fsys: fsys, p: p, opt: opt, ctx: ctx}

	queue := make(chan *slot, queueLen)
	jobs := make(chan *slot, opt.Workers*4)
	var wg sync.WaitGroup
	for range opt.Workers {
		wg.Go(func() { c.hashWorker(jobs) })
	}
	emitted := make(chan error, 1)
	go func() {
		var err error
		for s := range queue {
			<-s.done
			if err == nil {
				if err = emit(s.rec); err != nil {
					cancel(err)
				}
				c.stats.Records++
				opt.Counters.Records.Add(1)
			}
		}
		emitted <- err
	}()

	// A directory's record is held until the next call of the walk: when the walk then
	// reports an error for the same path (its blocks could not be listed, or its inode
	// was reached before), the error joins the record instead of making a second one for
	// the path, which a later check would pair with the wrong half.
	var held *slot
	release := func() {
		if held != nil {
			close(held.done)
			held = nil
		}
	}
	walkErr := fsys.Walk(ctx, "/", func(path string, e *diskscan.Entry, err error) error {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if held != nil && e == nil && path == held.rec.Path {
			c.dirError(held.rec, err)
			release()
			return nil
		}
		release()
		s, skip := c.visit(path, e, err)
		if s != nil {
			hold := e != nil && e.Type == diskscan.Dir && !s.hash
			if s.hash || hold {
				s.done = make(chan struct{})
			}
			queue <- s
			if s.hash {
				jobs <- s
			}
			if hold {
				held = s
			}
		}
		return skip
	})
	release()
	close(jobs)
	wg.Wait()
	close(queue)
	emitErr := <-emitted
	c.stats.Hashed, c.stats.Bytes = opt.Counters.Hashed.Load(), opt.Counters.Bytes.Load()
	c.stats.Errors += c.hashErrors.Load()
	if emitErr != nil {
		return c.stats, emitErr
	}
	if walkErr != nil {
		return c.stats, fmt.Errorf("walking filesystem: %w", walkErr)
	}
	return c.stats, nil
}

type collector struct {
	fsys       FS
	p          *Policy
	opt        Options
	ctx        context.Context
	stats      Stats // walk goroutine only, except hashErrors
	hashErrors atomic.Int64
}

var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// visit decides what to do with one walked entry. It returns the slot to queue (nil
// for none; slot.hash says it still needs hashing) and what to return
// to the walk (fs.SkipDir to prune a directory).
func (c *collector) visit(path string, e *diskscan.Entry, walkErr error) (*slot, error) {
	c.stats.Entries++
	c.opt.Counters.Entries.Add(1)
	segs := splitPath(path)
	sel := c.p.selectSegs(segs)
	if e == nil {
		c.stats.Errors++
		c.opt.Log.Debug("unreadable entry", "path", path, "err", walkErr)
		if walkErr == nil {
			walkErr = errors.New("no entry")
		}
		rule, attrs, growing := "", AttrSet(0), false
		if sel != nil {
			rule, attrs, growing = sel.Name, sel.Attrs, sel.Growing
		} else if old := c.opt.Baseline(path); old != nil {
			rule, attrs, growing = old.Rule, old.Attrs, old.Growing
		} else {
			return nil, nil
		}
		r := &Record{Path: path, Rule: rule, Attrs: attrs, Growing: growing, Err: walkErr.Error()}
		r.setRaw()
		if old := c.opt.Baseline(path); old != nil {
			r.Type = old.Type // keep the comparison to the error itself
		}
		return &slot{rec: r, done: closedDone}, nil
	}
	var skip error
	if e.Type == diskscan.Dir && !c.p.descend(segs) {
		skip = fs.SkipDir
	}
	var r *Record
	switch {
	case sel != nil:
		r = newRecord(e, sel.Name, sel.Attrs, sel.Growing)
	case e.Type == diskscan.Regular && e.Mode&0o6000 != 0 && c.p.setuidCandidate(segs):
		r = newRecord(e, SetuidRule, c.p.Setuid.Attrs, false)
	default:
		// A file of the setuid sweep that lost its bits is still followed, so the
		// check reports a mode change rather than a removal.
		if old := c.opt.Baseline(path); old != nil && old.Rule == SetuidRule && c.p.setuidCandidate(segs) {
			r = newRecord(e, SetuidRule, c.p.Setuid.Attrs, false)
		}
	}
	if r == nil {
		return nil, skip
	}
	s := &slot{rec: r, prefix: -1, done: closedDone}
	if e.Type != diskscan.Regular || r.Attrs&HashAttrs == 0 {
		return s, skip
	}
	old := c.opt.Baseline(path)
	if sel != nil && sel.TrustMetadata && reusable(old, r) {
		r.Hashes = old.Hashes
		c.stats.Reused++
		return s, skip
	}
	if r.Growing && old != nil && old.Err == "" && old.Type == r.Type && r.Size >= old.Size {
		s.prefix = old.Size
	}
	s.hash = true
	return s, skip
}

// reusable reports whether a trust_metadata selection may take old's hashes for r:
// same type, size, times and inode, and old has every hash r needs.
func reusable(old, r *Record) bool {
	if old == nil || old.Err != "" || old.Type != r.Type || old.Size != r.Size || old.Inode != r.Inode ||
		!old.Mtime.Equal(r.Mtime) || !old.Ctime.Equal(r.Ctime) {
		return false
	}
	for _, a := range (r.Attrs & HashAttrs).Attrs() {
		if old.Hashes.get(a) == "" {
			return false
		}
	}
	return true
}

// dirError records on a directory's record the error met after its entry was read.
func (c *collector) dirError(r *Record, err error) {
	c.stats.Errors++
	c.opt.Log.Debug("unreadable directory", "path", r.Path, "err", err)
	if err == nil {
		err = errors.New("no entry")
	}
	r.Err = err.Error()
}

func (c *collector) hashWorker(jobs <-chan *slot) {
	buf := make([]byte, hashBufSize)
	for s := range jobs {
		if c.ctx.Err() == nil {
			if err := c.hash(s, buf); err != nil {
				s.rec.Err = err.Error()
				c.hashErrors.Add(1)
				c.opt.Log.Debug("hashing failed", "path", s.rec.Path, "err", err)
			}
		}
		close(s.done)
	}
}
