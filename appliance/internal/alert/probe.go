package alert

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestResult is one sink's answer to a test alert (domainm alert test).
type TestResult struct {
	Sink      string  `json:"sink"`
	Type      string  `json:"type"`
	Delivered bool    `json:"delivered"`
	Skipped   string  `json:"skipped,omitempty"` // why the event was not spooled for this sink
	Error     string  `json:"error,omitempty"`   // the sink's last delivery error, when not delivered
	Seconds   float64 `json:"seconds"`           // from the commit to delivery, or to giving up
}

// TestEvent is the test alert: a health event ("alert-test") at sev, so that it
// passes the sinks whose min_severity it meets, and saying who asked.
func TestEvent(now time.Time, sev Severity, by string) Event {
	e := Health(now, sev, "alert", "test", "Domain M test alert (domainm alert test, requested by "+by+"): no finding, the delivery path works")
	e.Event.Type = []string{"info"}
	return e
}

// SendTest spools ev like Emit and waits until every sink it was spooled for has
// delivered it, or ctx ends; it reports each sink. It tells delivery by the event's
// place in the sink's queue: a sink delivers in order and removes what it delivered,
// so the event was delivered once the queue's first entry is past it.
func (d *Dispatcher) SendTest(ctx context.Context, ev Event) ([]TestResult, error) {
	e, err := d.encode(&ev)
	if err != nil {
		return nil, err
	}
	// The spool reports the sequence number it gave the event in each queue: looking
	// it up afterwards raced with a fast sink (a file) that had already delivered and
	// removed it, and reported "not in the sink's spool".
	e.seqs = make([]uint64, len(e.sinks))
	if err := d.emitEntries([]entry{e}); err != nil {
		return nil, err
	}
	given := map[string]uint64{}
	for j, sink := range e.sinks {
		given[sink] = e.seqs[j]
	}
	start := time.Now()
	res := make([]TestResult, len(d.runners))
	seqs := make([]uint64, len(d.runners))
	for i, r := range d.runners {
		res[i] = TestResult{Sink: r.cfg.Name, Type: r.cfg.Type}
		if e.sev > r.cfg.MinSeverity {
			res[i].Skipped = fmt.Sprintf("below the sink's min_severity %s", r.cfg.MinSeverity)
			continue
		}
		if seqs[i] = given[r.cfg.Name]; seqs[i] == 0 {
			res[i].Skipped = "did not fit in the sink's spool (spool full of more severe alerts)"
		}
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		left := 0
		for i, r := range d.runners {
			if seqs[i] == 0 || res[i].Delivered {
				continue
			}
			if d.sp.first(r.cfg.Name) > seqs[i] || d.sp.first(r.cfg.Name) == 0 {
				res[i].Delivered, res[i].Seconds = true, time.Since(start).Seconds()
				continue
			}
			left++
		}
		if left == 0 {
			return res, nil
		}
		select {
		case <-ctx.Done():
			for i, r := range d.runners {
				if seqs[i] != 0 && !res[i].Delivered {
					st := r.status()
					res[i].Seconds, res[i].Error = time.Since(start).Seconds(), st.LastError
					if res[i].Error == "" {
						res[i].Error = "not delivered in time (still spooled; it will be delivered when the sink works)"
					}
				}
			}
			return res, nil
		case <-t.C:
		}
	}
}

// first returns the sequence number of the oldest event in sink's queue (0: empty).
func (s *spool) first(sink string) uint64 {
	var seq uint64
	_ = s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(qName(sink)).Cursor().First(); len(k) == 8 {
			seq = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return seq
}

// Oldest is the @timestamp of the oldest alert waiting in sink's spool (zero if none).
func (d *Dispatcher) Oldest(sink string) time.Time { return d.sp.oldest(sink) }

// last returns the sequence number of the newest event in sink's queue (0: empty).
func (s *spool) last(sink string) uint64 {
	var seq uint64
	_ = s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(qName(sink)).Cursor().Last(); len(k) == 8 {
			seq = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return seq
}

// HeldBack is how many alerts sink's rate_limit held back since the start.
func (d *Dispatcher) HeldBack(sink string) int {
	for _, r := range d.runners {
		if r.cfg.Name == sink {
			return r.heldBack()
		}
	}
	return 0
}
