package alert

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// lineReceiver is a JSON-lines receiver on loopback that records the domainm.seq
// of every line, per connection.
type lineReceiver struct {
	t     *testing.T
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	seqs  [][]int // per accepted connection
}

func newLineReceiver(t *testing.T) *lineReceiver { return newLineReceiverAt(t, "127.0.0.1:0") }

// newLineReceiverAt is a lineReceiver listening on addr.
func newLineReceiverAt(t *testing.T, addr string) *lineReceiver {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &lineReceiver{t: t, ln: ln}
	t.Cleanup(func() { r.close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			i := len(r.seqs)
			r.conns, r.seqs = append(r.conns, c), append(r.seqs, nil)
			r.mu.Unlock()
			go func() {
				sc := bufio.NewScanner(c)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					s := seqOf(t, sc.Bytes())
					r.mu.Lock()
					r.seqs[i] = append(r.seqs[i], s)
					r.mu.Unlock()
				}
			}()
		}
	}()
	return r
}

func (r *lineReceiver) addr() string { return r.ln.Addr().String() }

// all returns every seq received, in order of connections.
func (r *lineReceiver) all() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, s := range r.seqs {
		out = append(out, s...)
	}
	return out
}

// reset stops accepting and resets every connection (RST, as a receiver that
// crashes with unread data does).
func (r *lineReceiver) reset() {
	r.ln.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
}

func (r *lineReceiver) close() {
	r.ln.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
}

func jsonlSink(addr string, confirm time.Duration) Config {
	return Config{Hostname: "domainm-test", Sinks: []SinkConfig{{Name: "s", Type: TypeJSONL, Transport: "tcp", Address: addr,
		Confirm: confirm, BackoffMin: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond}}}
}

// stopNow closes d without letting it deliver first, as close to a kill as one
// process can get: the runners stop where they are.
func stopNow(d *Dispatcher) {
	ctx, cancel := context.WithDeadline(context.Background(), time.Now())
	defer cancel()
	d.Close(ctx)
}

// TestStreamAckedNotResentAfterStop: alerts the receiver acknowledged, but that
// were not confirmed when the supervisor stopped, are not sent again by the next.
func TestStreamAckedNotResentAfterStop(t *testing.T) {
	rcv := newLineReceiver(t)
	cfg := jsonlSink(rcv.addr(), time.Hour) // nothing is ever confirmed
	state := t.TempDir()
	d, err := New(cfg, state, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	emitN(t, d, 0, 100)
	waitFor(t, 30*time.Second, "the receiver to get 100 alerts and the spool to record their acknowledgement", func() bool {
		return len(rcv.all()) == 100 && d.sp.acked("s") == 100
	})
	stopNow(d)

	d, err = New(cfg, state, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stopNow(d)
	if st := d.Status()[0]; st.Spooled != 0 {
		t.Errorf("%d alerts still spooled after a restart, want 0: the receiver acknowledged all", st.Spooled)
	}
	emitN(t, d, 100, 50)
	waitFor(t, 30*time.Second, "150 alerts at the receiver", func() bool { return len(rcv.all()) >= 150 })
	time.Sleep(100 * time.Millisecond) // a re-send would follow right away
	got := rcv.all()
	for i, s := range got {
		if s != i {
			t.Fatalf("receiver got %d alerts; #%d is alert %d, want %d (re-sent after the restart?)", len(got), i, s, i)
		}
	}
}

// TestStreamResetForgetsAcked: a receiver that resets the connection after
// acknowledging may have lost what it acknowledged: the spool forgets the
// acknowledgement at once, so that a crash after the reset re-sends, not loses.
func TestStreamResetForgetsAcked(t *testing.T) {
	rcv := newLineReceiver(t)
	cfg := jsonlSink(rcv.addr(), time.Hour)
	state := t.TempDir()
	d, err := New(cfg, state, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	emitN(t, d, 0, 100)
	waitFor(t, 30*time.Second, "the spool to record the acknowledgement of 100 alerts", func() bool {
		return len(rcv.all()) == 100 && d.sp.acked("s") == 100
	})
	rcv.reset()
	waitFor(t, 30*time.Second, "the spool to forget the acknowledgement after the reset", func() bool {
		return d.sp.acked("s") == 0
	})
	stopNow(d)

	d, err = New(cfg, state, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stopNow(d)
	if st := d.Status()[0]; st.Spooled != 100 {
		t.Fatalf("%d alerts spooled after the reset and a restart, want all 100", st.Spooled)
	}
}

// TestSpoolAckedMark: the acknowledged mark survives a reopen, dropAcked removes
// what it covers and clears it, confirming past it clears it, and a sink no longer
// configured loses its mark with its queue.
func TestSpoolAckedMark(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	sinks := map[string]int64{"a": 1 << 20, "b": 1 << 20}
	sp, _, err := openSpool(path, sinks)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := sp.add([]entry{{sev: SevLow, data: payload(i, 10), sinks: []string{"a", "b"}}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := sp.settle("a", 3, 7); err != nil || n != 3 {
		t.Fatalf("settle(a, 3, 7) removed %d (%v), want 3", n, err)
	}
	if _, err := sp.settle("b", 0, 5); err != nil {
		t.Fatal(err)
	}
	sp.close()

	sp, _, err = openSpool(path, sinks)
	if err != nil {
		t.Fatal(err)
	}
	if m := sp.acked("a"); m != 7 {
		t.Fatalf("mark of a after reopen = %d, want 7", m)
	}
	if n, err := sp.dropAcked("a"); err != nil || n != 4 {
		t.Fatalf("dropAcked(a) removed %d (%v), want 4 (events 4..7)", n, err)
	}
	if n, _ := sp.stats("a"); n != 3 || sp.acked("a") != 0 {
		t.Fatalf("sink a holds %d with mark %d, want 3 and no mark", n, sp.acked("a"))
	}
	if recs, _ := sp.read("a", 0, 1, 1<<20); len(recs) != 1 || recs[0].seq != 8 {
		t.Fatalf("sink a's first event after dropAcked: %v, want seq 8", recs)
	}
	if _, err := sp.settle("a", 9, 9); err != nil || sp.acked("a") != 0 {
		t.Fatalf("a mark not beyond what was removed must clear it (%v): mark %d", err, sp.acked("a"))
	}
	sp.close()

	sp, _, err = openSpool(path, map[string]int64{"a": 1 << 20}) // b removed
	if err != nil {
		t.Fatal(err)
	}
	sp.close()
	sp, _, err = openSpool(path, sinks) // and back, empty
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if m := sp.acked("b"); m != 0 {
		t.Fatalf("sink b removed and configured again: mark %d, want none", m)
	}
}
