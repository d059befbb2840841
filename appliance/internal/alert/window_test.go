package alert

import (
	"fmt"
	"testing"
	"time"
)

// seqRecs returns records with sequence numbers from..to.
func seqRecs(from, to uint64) []record {
	var out []record
	for s := from; s <= to; s++ {
		out = append(out, record{seq: s, sev: SevHigh, data: []byte("x")})
	}
	return out
}

func seqsOf(recs []record) string {
	if len(recs) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d]", recs[0].seq, recs[len(recs)-1].seq)
}

var winBase = time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)

func winAt(ms int) time.Time { return winBase.Add(time.Duration(ms) * time.Millisecond) }

// TestAckWindowConfirmsInOrder: a batch is confirmed only once all of its bytes
// were acknowledged and confirm has passed since; batches leave in order, and
// ackedSeq names the last acknowledged, unconfirmed one.
func TestAckWindowConfirmsInOrder(t *testing.T) {
	w := newAckWindow(time.Second, 10*time.Second, 1<<20, 1<<30, winAt(0))
	w.wrote(seqRecs(1, 10), 1000, winAt(0))  // bytes 0..1000
	w.wrote(seqRecs(11, 20), 1000, winAt(5)) // 1000..2000
	w.wrote(seqRecs(21, 30), 1000, winAt(6)) // 2000..3000
	if w.next != 30 || w.written != 3000 {
		t.Fatalf("next %d, written %d; want 30, 3000", w.next, w.written)
	}

	w.update(2500, winAt(10)) // 500 acknowledged: no batch entirely
	if s := w.ackedSeq(); s != 0 {
		t.Fatalf("ackedSeq = %d with only part of the first batch acknowledged, want 0", s)
	}
	w.update(1000, winAt(20)) // 2000: batches 1 and 2
	if s := w.ackedSeq(); s != 20 {
		t.Fatalf("ackedSeq = %d, want 20", s)
	}
	if got := w.confirmed(winAt(1019)); len(got) != 0 {
		t.Fatalf("confirmed %s 999ms after the acknowledgement, want nothing", seqsOf(got))
	}
	w.update(0, winAt(500)) // batch 3 acknowledged later
	if got := w.confirmed(winAt(1020)); seqsOf(got) != "[1..20]" {
		t.Fatalf("confirmed %s at 1020ms, want [1..20]", seqsOf(got))
	}
	if s := w.ackedSeq(); s != 30 {
		t.Fatalf("ackedSeq = %d after the first two were confirmed, want 30", s)
	}
	if got := w.confirmed(winAt(1499)); len(got) != 0 {
		t.Fatalf("confirmed %s before batch 3's confirm ran out", seqsOf(got))
	}
	if got := w.confirmed(winAt(1500)); seqsOf(got) != "[21..30]" || w.pending() {
		t.Fatalf("confirmed %s, pending %v; want [21..30], nothing pending", seqsOf(got), w.pending())
	}
	if s := w.ackedSeq(); s != 0 {
		t.Fatalf("ackedSeq = %d with everything confirmed, want 0", s)
	}
}

// TestAckWindowAcknowledgedOnlyInOrder: an acknowledgement of the stream's end
// acknowledges every batch before it, and an acknowledgement never goes back.
func TestAckWindowAcknowledgedOnlyInOrder(t *testing.T) {
	w := newAckWindow(0, time.Second, 1<<20, 1<<30, winAt(0))
	w.wrote(seqRecs(1, 1), 100, winAt(0))
	w.update(100, winAt(1)) // nothing
	w.wrote(seqRecs(2, 2), 100, winAt(2))
	w.update(200, winAt(3)) // still nothing: SIOCOUTQ counts both
	if s := w.ackedSeq(); s != 0 {
		t.Fatalf("ackedSeq = %d, want 0", s)
	}
	w.update(0, winAt(4))
	w.update(150, winAt(5)) // a stale, larger count must not undo the acknowledgement
	if s := w.ackedSeq(); s != 2 {
		t.Fatalf("ackedSeq = %d, want 2", s)
	}
	if got := w.confirmed(winAt(4)); seqsOf(got) != "[1..2]" {
		t.Fatalf("confirmed %s with confirm 0, want [1..2]", seqsOf(got))
	}
}

// TestAckWindowRoom: the window holds at most limit bytes beyond the oldest
// unconfirmed batch.
func TestAckWindowRoom(t *testing.T) {
	w := newAckWindow(time.Second, time.Second, 1000, 1<<30, winAt(0))
	if !w.room() {
		t.Fatal("an empty window has no room")
	}
	w.wrote(seqRecs(1, 5), 600, winAt(0))
	w.wrote(seqRecs(6, 10), 600, winAt(0))
	if !w.room() {
		t.Fatal("no room with 600 bytes beyond the oldest batch, limit 1000")
	}
	w.wrote(seqRecs(11, 15), 600, winAt(0))
	if w.room() {
		t.Fatal("room with 1200 bytes beyond the oldest batch, limit 1000")
	}
	w.update(0, winAt(1))
	w.confirmed(winAt(1001))
	if !w.room() || w.pending() {
		t.Fatalf("after confirming everything: room %v, pending %v", w.room(), w.pending())
	}
}

// TestAckWindowUnackedRoom: no more than unacked bytes wait for the receiver's TCP
// acknowledgement, however long confirm is; acknowledgements make room again.
func TestAckWindowUnackedRoom(t *testing.T) {
	w := newAckWindow(time.Hour, time.Second, 1<<30, 1000, winAt(0))
	w.wrote(seqRecs(1, 5), 600, winAt(0))
	if !w.room() {
		t.Fatal("no room with 600 bytes unacknowledged, limit 1000")
	}
	w.wrote(seqRecs(6, 10), 600, winAt(0))
	if w.room() {
		t.Fatal("room with 1200 bytes unacknowledged, limit 1000")
	}
	w.update(300, winAt(1)) // 900 acknowledged, none confirmed
	if !w.room() {
		t.Fatal("no room with 300 bytes unacknowledged")
	}
	if s := w.ackedSeq(); s != 5 {
		t.Fatalf("ackedSeq = %d, want 5", s)
	}
}

// TestAckWindowStall: a receiver that acknowledges nothing for timeout is reported
// once; progress re-arms the report. Data all acknowledged is no stall.
func TestAckWindowStall(t *testing.T) {
	w := newAckWindow(time.Hour, 2*time.Second, 1<<20, 1<<30, winAt(0))
	w.wrote(seqRecs(1, 10), 1000, winAt(0))
	if w.update(1000, winAt(2000)) {
		t.Fatal("stall reported after exactly timeout")
	}
	if !w.update(1000, winAt(2001)) {
		t.Fatal("no stall reported after timeout without an acknowledgement")
	}
	if w.update(1000, winAt(5000)) {
		t.Fatal("the same stall reported twice")
	}
	if w.update(400, winAt(6000)) {
		t.Fatal("stall reported on progress")
	}
	if !w.update(400, winAt(8001)) {
		t.Fatal("a second stall after progress was not reported")
	}
	w.update(0, winAt(8002))
	if w.update(0, winAt(60000)) {
		t.Fatal("stall reported with everything acknowledged")
	}
	// A write is progress too.
	w.wrote(seqRecs(11, 11), 10, winAt(60000))
	if w.update(10, winAt(61000)) {
		t.Fatal("stall reported 1s after a write")
	}
}

// TestAckWindowEmptyBatch: a batch that framed to nothing (all undecodable) is
// acknowledged at once and confirmed in its turn.
func TestAckWindowEmptyBatch(t *testing.T) {
	w := newAckWindow(0, time.Second, 1<<20, 1<<30, winAt(0))
	w.wrote(seqRecs(1, 3), 0, winAt(0))
	w.update(0, winAt(0))
	if got := w.confirmed(winAt(0)); seqsOf(got) != "[1..3]" {
		t.Fatalf("confirmed %s, want [1..3]", seqsOf(got))
	}
}
