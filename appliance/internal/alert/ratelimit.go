package alert

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// rateLimit is a token bucket: rate alerts a second, bursts of burst. A nil
// *rateLimit lets everything through.
type rateLimit struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time

	// heldMark is the highest spool sequence number counted as held back; heldTotal
	// counts them all; reported is when the last rate-limited health alert went out.
	heldMark  uint64
	heldTotal int
	reported  time.Time
}

func newRateLimit(rate float64, burst int) *rateLimit {
	if rate <= 0 {
		return nil
	}
	b := float64(burst)
	if b <= 0 {
		b = max(1, rate)
	}
	return &rateLimit{rate: rate, burst: b, tokens: b, last: time.Now()}
}

func (l *rateLimit) refill(now time.Time) {
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
}

// avail is how many alerts may go now.
func (l *rateLimit) avail() int {
	if l == nil {
		return 1 << 30
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(time.Now())
	return int(l.tokens)
}

// take spends n alerts' worth.
func (l *rateLimit) take(n int) {
	if l == nil || n == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(time.Now())
	l.tokens -= float64(n)
}

// wait is how long until one alert may go.
func (l *rateLimit) wait() time.Duration {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(time.Now())
	if l.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
}

// allowed is how many alerts the next read may take (batch at most), after the
// sequence number after (0: from the head of the spool). When the limit holds some
// back, they are counted, once each, and reported.
func (r *runner) allowed(after uint64) int {
	a := r.limit.avail()
	n := min(r.cfg.Batch, a)
	if r.limit != nil && a < r.cfg.Batch { // the limit, not the batch size, decides
		r.noteHeld(after, n)
	}
	return n
}

// waitLimit waits, for a batch sink, until the limit lets one alert go; false when
// ctx ended.
func (r *runner) waitLimit(ctx context.Context, after uint64) bool {
	w := r.limit.wait()
	if w <= 0 {
		return true
	}
	r.noteHeld(after, 0)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(w):
		return true
	}
}

// noteHeld counts the spooled alerts beyond the n the limit lets go now (after the
// sequence number after), each once, and says so with a health alert at most once
// a minute.
func (r *runner) noteHeld(after uint64, n int) {
	first := after + 1
	if after == 0 {
		first = r.d.sp.first(r.cfg.Name)
	}
	last := r.d.sp.last(r.cfg.Name)
	if first == 0 || last == 0 {
		return
	}
	from := first + uint64(n)
	l := r.limit
	l.mu.Lock()
	from = max(from, l.heldMark+1)
	if from > last {
		l.mu.Unlock()
		return
	}
	held := int(last - from + 1)
	l.heldMark, l.heldTotal = last, l.heldTotal+held
	total := l.heldTotal
	report := time.Since(l.reported) >= time.Minute
	if report {
		l.reported = time.Now()
	}
	l.mu.Unlock()
	r.d.m.heldBack.WithLabelValues(r.cfg.Name).Add(float64(held))
	if !report {
		return
	}
	r.log.Warn("alert sink over its rate_limit: alerts held back in its spool, delivered later in order", "held_back_total", total, "rate_limit", l.rate)
	ev := Health(time.Now(), SevMedium, "alert-sink", "rate-limited",
		fmt.Sprintf("alert sink %s is over its rate_limit of %g alerts a second: %d alerts held back so far (none dropped: they stay spooled and are delivered in order as the limit allows)",
			r.cfg.Name, l.rate, total))
	ev.DomainM.Sink = r.cfg.Name
	e, err := r.d.encode(&ev)
	if err != nil {
		return
	}
	select { // never wait here: the writer may be busy
	case r.d.reqs <- &emitReq{entries: []entry{e}, done: make(chan error, 1)}:
	default:
	}
}

// heldBack is how many alerts the sink's rate limit held back since the start.
func (r *runner) heldBack() int {
	if r.limit == nil {
		return 0
	}
	r.limit.mu.Lock()
	defer r.limit.mu.Unlock()
	return r.limit.heldTotal
}
