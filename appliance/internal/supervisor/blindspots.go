package supervisor

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/memscan"
)

// maxBlockErrorLogs bounds the per-block log lines of one pass part; the coalesced
// ranges are logged (bounded too) when the pass ends.
const maxBlockErrorLogs = 5

// blindSpots collects the blocks a memory pass could not scan (a YARA timeout, memory
// that cannot be read) over all parts of the pass (a prepare/resume splits one), and
// reports them when the pass ends: an alert when the unscanned ranges appear or change,
// another when a pass scans everything again. Owned by the memory loop's goroutine.
type blindSpots struct {
	errs    []memscan.BlockError // of the running pass, all its parts
	alerted string               // signature of the ranges last alerted; "" when none
}

// add records a pass part's block errors and logs each (bounded), with the time it failed.
func (b *blindSpots) add(m *memLoop, errs []memscan.BlockError) {
	for i, e := range errs {
		if i == maxBlockErrorLogs {
			m.s.log.Warn("more memory blocks not scanned", "count", len(errs)-i)
			break
		}
		m.s.log.Warn("memory block not scanned", "gpa", fmt.Sprintf("%#x", e.GPA), "size", e.Size,
			"reason", e.Reason(), "failed_at", e.At.UTC().Format(time.RFC3339Nano), "err", e.Err)
	}
	b.errs = append(b.errs, errs...)
}

// reset forgets the running pass's errors (the source changed, or it failed as a whole).
func (b *blindSpots) reset() { b.errs = nil }

// end is called when a pass reached the end: it returns what went unscanned (nil when
// nothing did), alerts changes, and starts afresh for the next pass.
func (b *blindSpots) end(m *memLoop) *control.Unscanned {
	u := coalesce(b.errs)
	b.errs = nil
	sig := signature(u)
	switch {
	case u != nil && sig != b.alerted:
		m.s.log.Error("memory pass left blind spots", "bytes", u.Bytes, "blocks", u.Blocks, "reasons", u.Reasons,
			"ranges", describeRanges(u))
		ev := alert.Health(m.s.clk.Now(), alert.SevHigh, "memory-scan", "blind-spots",
			fmt.Sprintf("memory pass over %s left %s in %d blocks unscanned (%s): %s",
				m.s.currentTarget().Source, sizeText(u.Bytes), u.Blocks, reasonsText(u.Reasons), describeRanges(u)))
		ev.DomainM.Meta = alert.MetaFields{
			"unscanned_bytes":  fmt.Sprint(u.Bytes),
			"unscanned_blocks": fmt.Sprint(u.Blocks),
			"unscanned_ranges": describeRanges(u),
			"reasons":          reasonsText(u.Reasons),
		}
		m.s.emit(ev)
	case u == nil && b.alerted != "":
		m.s.emit(alert.Health(m.s.clk.Now(), alert.SevInfo, "memory-scan", "complete",
			fmt.Sprintf("memory pass over %s scanned every block again", m.s.currentTarget().Source)))
	}
	b.alerted = sig
	return u
}

// coalesce sorts block errors by address and joins adjacent blocks that failed for
// the same reason into ranges; it keeps the first MaxUnscannedRanges ranges and counts
// the rest.
func coalesce(errs []memscan.BlockError) *control.Unscanned {
	if len(errs) == 0 {
		return nil
	}
	es := append([]memscan.BlockError(nil), errs...)
	sort.Slice(es, func(i, j int) bool { return es[i].GPA < es[j].GPA })
	u := &control.Unscanned{Reasons: map[string]int{}}
	type run struct {
		start, end  uint64
		reason      string
		first, last time.Time
	}
	var cur *run
	flush := func() {
		if cur == nil {
			return
		}
		u.RangesTotal++
		if len(u.Ranges) < control.MaxUnscannedRanges {
			u.Ranges = append(u.Ranges, control.UnscannedRange{
				Start: fmt.Sprintf("%#x", cur.start), End: fmt.Sprintf("%#x", cur.end), Reason: cur.reason,
				First: cur.first.UTC().Format(time.RFC3339Nano), Last: cur.last.UTC().Format(time.RFC3339Nano)})
		}
	}
	for _, e := range es {
		r := e.Reason()
		u.Bytes += e.Size
		u.Blocks++
		u.Reasons[r]++
		if cur != nil && cur.end == e.GPA && cur.reason == r {
			cur.end = e.GPA + e.Size
			cur.first, cur.last = minTime(cur.first, e.At), maxTime(cur.last, e.At)
			continue
		}
		flush()
		cur = &run{start: e.GPA, end: e.GPA + e.Size, reason: r, first: e.At, last: e.At}
	}
	flush()
	return u
}

// signature identifies the unscanned ranges and reasons (not the times), so the same
// blind spots pass after pass are alerted once.
func signature(u *control.Unscanned) string {
	if u == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d;", u.RangesTotal)
	for _, r := range u.Ranges {
		fmt.Fprintf(&b, "%s-%s:%s;", r.Start, r.End, r.Reason)
	}
	return b.String()
}

func describeRanges(u *control.Unscanned) string {
	parts := make([]string, 0, len(u.Ranges)+1)
	for _, r := range u.Ranges {
		parts = append(parts, fmt.Sprintf("%s-%s %s (failed %s)", r.Start, r.End, r.Reason, r.First))
	}
	if more := u.RangesTotal - len(u.Ranges); more > 0 {
		parts = append(parts, fmt.Sprintf("and %d more ranges", more))
	}
	return strings.Join(parts, ", ")
}

func reasonsText(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d blocks", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func sizeText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// passHealth is what the last memory pass says about health (guarded by memLoop.mu).
type passHealth struct {
	failErr   string             // the last pass failed as a whole: why
	unscanned *control.Unscanned // the blind spots of the last pass that reached the end
}

// setPassHealth records the last pass's verdict and publishes the health model.
func (m *memLoop) setPassHealth(failErr string, u *control.Unscanned) {
	m.mu.Lock()
	m.health = passHealth{failErr: failErr, unscanned: u}
	m.mu.Unlock()
	m.s.publish(false, "", nil)
}

// passFailed records a pass that scanned nothing: every block of it went unscanned.
func (m *memLoop) passFailed(err error, res memscan.PassResult) {
	m.spots.reset()
	m.setPassHealth(err.Error(), coalesce(res.Errors))
}

// noteBlindSpots records a pass part's block errors and, when the pass reached the
// end, reports its blind spots; it returns whether the finished pass left any (it then
// cannot tell that a finding is gone: the finding may sit in what it did not scan).
func (m *memLoop) noteBlindSpots(res memscan.PassResult) bool {
	m.spots.add(m, res.Errors)
	if !res.Complete {
		return false
	}
	u := m.spots.end(m)
	m.setPassHealth("", u)
	return u != nil
}
