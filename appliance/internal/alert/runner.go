package alert

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"
)

// batchSink delivers events synchronously: send returns how many of recs, a prefix,
// are done (delivered, or refused for good and reported through rejected).
type batchSink interface {
	send(ctx context.Context, recs []record, evs []*Event) (done int, rejected []int, err error)
	close() error
}

// streamSink is a TCP or TLS connection carrying framed events.
type streamSink struct {
	dial  func(ctx context.Context) (net.Conn, error)
	frame func(dst []byte, e *Event, raw []byte) []byte
}

// runner is one sink's delivery loop.
type runner struct {
	cfg    SinkConfig
	d      *Dispatcher
	log    *slog.Logger
	wake   chan struct{}
	batch  batchSink
	stream *streamSink

	mu      sync.Mutex
	up      bool
	lastErr string
	lastOK  time.Time
	conn    net.Conn

	limit *rateLimit // rate_limit; nil for none (ratelimit.go)
}

// How much a stream may have written but not yet confirmed (it bounds the
// duplicates a lost connection causes), and not yet acknowledged by the receiver's
// TCP stack, in writes of at most streamBatchBytes of events; how often it checks
// for acknowledgements, and records in the spool how far they reached. The last
// three bound the duplicates after a crash.
const (
	streamWindow     = 16 << 20
	streamUnacked    = 256 << 10
	streamBatchBytes = 128 << 10
	ackPoll          = 10 * time.Millisecond
	ackPersist       = 25 * time.Millisecond
	readBatchBytes   = 1 << 20
)

var errIdleClosed = errors.New("receiver closed the idle connection")

func newRunner(cfg SinkConfig, d *Dispatcher) (*runner, error) {
	r := &runner{cfg: cfg, d: d, log: d.log.With("sink", cfg.Name), wake: make(chan struct{}, 1)}
	var err error
	switch cfg.Type {
	case TypeSyslog:
		if cfg.Transport == "udp" {
			r.batch, err = newUDPSink(cfg)
		} else {
			r.stream, err = newSyslogStream(cfg)
		}
	case TypeJSONL:
		r.stream, err = newJSONStream(cfg)
	case TypeHTTP:
		r.batch, err = newHTTPSink(cfg)
	case TypeJournal:
		r.batch, err = newJournalSink(cfg)
	case TypeFile:
		r.batch, err = newFileSink(cfg)
	default:
		err = fmt.Errorf("unknown sink type %q", cfg.Type)
	}
	r.limit = newRateLimit(cfg.RateLimit, cfg.RateBurst)
	if cfg.InsecureSkipVerify {
		r.log.Warn("TLS server verification is OFF for this sink: anyone on the path can read and fake alerts")
	}
	return r, err
}

// poke tells the loop that the spool has new events.
func (r *runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *runner) run(ctx context.Context) {
	backoff := r.cfg.BackoffMin
	for {
		if !r.waitData(ctx) {
			return
		}
		var err error
		if r.stream != nil {
			err = r.streamOnce(ctx)
		} else if !r.waitLimit(ctx, 0) {
			return
		} else {
			err = r.batchOnce(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil || errors.Is(err, errIdleClosed) {
			backoff = r.cfg.BackoffMin
			continue
		}
		r.failed(err)
		// Full jitter keeps many appliances from reconnecting in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(backoff*2, r.cfg.BackoffMax)
		select {
		case <-ctx.Done():
			return
		case <-r.d.clk.After(wait):
		}
	}
}

// waitData returns once the sink's spool holds something, false when ctx ends.
func (r *runner) waitData(ctx context.Context) bool {
	for {
		if n, _ := r.d.sp.stats(r.cfg.Name); n > 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-r.wake:
		}
	}
}

func (r *runner) failed(err error) {
	r.mu.Lock()
	wasUp := r.up
	r.up, r.lastErr = false, err.Error()
	r.mu.Unlock()
	r.d.m.up.WithLabelValues(r.cfg.Name).Set(0)
	r.d.m.failures.WithLabelValues(r.cfg.Name, reason(err)).Inc()
	if wasUp {
		r.log.Error("alert delivery failing; alerts stay spooled", "err", err)
	} else {
		r.log.Debug("alert delivery still failing", "err", err)
	}
}

func (r *runner) ok() {
	r.mu.Lock()
	wasUp := r.up
	r.up, r.lastErr, r.lastOK = true, "", r.d.clk.Now()
	r.mu.Unlock()
	if !wasUp {
		r.d.m.up.WithLabelValues(r.cfg.Name).Set(1)
		r.log.Info("alert sink delivering")
	}
}

func reason(err error) string {
	var ne net.Error
	var oe *net.OpError
	var ve *tls.CertificateVerificationError
	switch {
	case errors.As(err, &ve) || strings.Contains(err.Error(), "TLS handshake"):
		return "tls"
	case errors.As(err, &oe) && oe.Op == "dial":
		return "connect"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, errConnLost):
		return "connection_lost"
	case errors.Is(err, errStalled):
		return "stalled"
	case errors.As(err, &oe):
		return "write"
	}
	return "send"
}

func (r *runner) status() SinkStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return SinkStatus{Name: r.cfg.Name, Type: r.cfg.Type, Up: r.up, LastError: r.lastErr, LastOK: r.lastOK, MaxBytes: int64(r.cfg.SpoolMaxBytes)}
}

func (r *runner) closeSink() {
	r.mu.Lock()
	c := r.conn
	r.mu.Unlock()
	if c != nil {
		c.Close()
	}
	if r.batch != nil {
		r.batch.close()
	}
}

// decode turns spooled records into events; records that do not decode are dropped
// (they would block the sink forever) and reported.
func (r *runner) decode(recs []record) ([]record, []*Event) {
	out, evs := recs[:0:0], make([]*Event, 0, len(recs))
	for _, rec := range recs {
		e, err := decodeEvent(rec.data)
		if err != nil {
			r.log.Error("dropping undecodable spooled alert", "seq", rec.seq, "err", err)
			r.d.m.dropped.WithLabelValues(r.cfg.Name, rec.sev.String(), "undecodable").Inc()
			continue
		}
		out = append(out, rec)
		evs = append(evs, e)
	}
	return out, evs
}

// delivered removes recs up to seq from the spool and counts them.
func (r *runner) delivered(recs []record, upTo uint64) error {
	return r.settled(recs, upTo, 0)
}

// settled is delivered that also records, for a stream, up to which sequence
// number the receiver acknowledged what is not confirmed yet (0: nothing).
func (r *runner) settled(recs []record, upTo, acked uint64) error {
	if _, err := r.d.sp.settle(r.cfg.Name, upTo, acked); err != nil {
		return err
	}
	for _, rec := range recs {
		r.d.m.delivered.WithLabelValues(r.cfg.Name, rec.sev.String()).Inc()
	}
	r.ok()
	return nil
}

func (r *runner) batchOnce(ctx context.Context) error {
	all, err := r.d.sp.read(r.cfg.Name, 0, r.allowed(0), readBatchBytes)
	if err != nil || len(all) == 0 {
		return err
	}
	r.limit.take(len(all))
	recs, evs := r.decode(all)
	done, rejected, err := 0, []int(nil), error(nil)
	if len(recs) > 0 {
		done, rejected, err = r.batch.send(ctx, recs, evs)
	}
	isRejected := map[int]bool{}
	for _, i := range rejected {
		isRejected[i] = true
		r.d.m.dropped.WithLabelValues(r.cfg.Name, recs[i].sev.String(), "rejected").Inc()
		r.log.Error("receiver refused an alert for good; dropped", "event_id", evs[i].Event.ID, "severity", recs[i].sev.String())
	}
	upTo := uint64(0)
	switch {
	case done > 0:
		upTo = recs[done-1].seq
	case len(recs) == 0:
		upTo = all[len(all)-1].seq // all undecodable
	}
	if done == len(recs) {
		upTo = all[len(all)-1].seq
	}
	if upTo > 0 {
		var ok []record
		for i, rec := range recs[:done] {
			if !isRejected[i] {
				ok = append(ok, rec)
			}
		}
		if rerr := r.delivered(ok, upTo); rerr != nil {
			return rerr
		}
	}
	return err
}
