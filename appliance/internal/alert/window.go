package alert

import "time"

// ackWindow is a stream's bookkeeping between the spool and the socket: the batches
// written but not yet confirmed, how far the receiver's TCP stack acknowledged them,
// and whether the receiver stalled. It does no I/O and reads no clock: the caller
// passes the time and the socket's unacknowledged byte count (SIOCOUTQ), so it is
// tested without a socket.
//
// A batch is acknowledged once every byte of it is (acked reached its end), and
// confirmed once the connection then stayed up for confirm; confirmed batches leave
// the spool, acknowledged ones are remembered in it (ackedSeq), so that a new
// process after a crash does not send them again.
type ackWindow struct {
	confirm time.Duration // acknowledged, then up this long: confirmed
	timeout time.Duration // nothing acknowledged this long: stalled
	limit   int64         // bytes written beyond the oldest unconfirmed batch
	unacked int64         // bytes written and not acknowledged

	written  int64       // stream offset: bytes written so far
	acked    int64       // stream offset the receiver acknowledged
	next     uint64      // last sequence number written
	inflight []batchMark // written, not confirmed, in order
	progress time.Time   // last time acked moved, or a write ended
	reported bool        // stall reported since progress
}

// batchMark is one written batch awaiting confirmation.
type batchMark struct {
	recs    []record // seq and severity only
	end     int64    // stream offset just past the batch
	ackedAt time.Time
}

func newAckWindow(confirm, timeout time.Duration, limit, unacked int64, now time.Time) *ackWindow {
	return &ackWindow{confirm: confirm, timeout: timeout, limit: limit, unacked: unacked, progress: now}
}

// room reports whether another batch may be written: less than limit bytes beyond
// the oldest unconfirmed batch and less than unacked bytes not acknowledged. The
// second bounds what a new process sends again after a crash (see ackedSeq).
func (w *ackWindow) room() bool {
	return len(w.inflight) == 0 || w.written-w.inflight[0].end < w.limit && w.written-w.acked < w.unacked
}

// pending reports whether written batches await confirmation.
func (w *ackWindow) pending() bool { return len(w.inflight) > 0 }

// wrote records that recs (in order, non-empty) were written as n bytes.
func (w *ackWindow) wrote(recs []record, n int, now time.Time) {
	marks := make([]record, len(recs))
	for i, rec := range recs {
		marks[i] = record{seq: rec.seq, sev: rec.sev}
	}
	w.written += int64(n)
	w.next = recs[len(recs)-1].seq
	w.inflight = append(w.inflight, batchMark{recs: marks, end: w.written})
	w.progress = now
}

// update takes the bytes written but not yet acknowledged (SIOCOUTQ). It returns
// true, once per stall, when data waits and nothing was acknowledged for timeout.
func (w *ackWindow) update(unacked int, now time.Time) (stalled bool) {
	if a := w.written - int64(unacked); a > w.acked {
		w.acked, w.progress, w.reported = a, now, false
	} else if !w.reported && w.acked < w.written && now.Sub(w.progress) > w.timeout {
		w.reported, stalled = true, true
	}
	for i := range w.inflight {
		m := &w.inflight[i]
		if m.end > w.acked {
			break
		}
		if m.ackedAt.IsZero() {
			m.ackedAt = now
		}
	}
	return stalled
}

// confirmed removes and returns, in order, the records of the leading batches that
// were acknowledged at least confirm ago.
func (w *ackWindow) confirmed(now time.Time) []record {
	k := 0
	for k < len(w.inflight) && !w.inflight[k].ackedAt.IsZero() && now.Sub(w.inflight[k].ackedAt) >= w.confirm {
		k++
	}
	var done []record
	for _, m := range w.inflight[:k] {
		done = append(done, m.recs...)
	}
	w.inflight = w.inflight[k:]
	return done
}

// ackedSeq is the last sequence number of the last batch the receiver acknowledged
// that is not confirmed yet; 0 if there is none.
func (w *ackWindow) ackedSeq() uint64 {
	var seq uint64
	for _, m := range w.inflight {
		if m.ackedAt.IsZero() {
			break
		}
		seq = m.recs[len(m.recs)-1].seq
	}
	return seq
}
