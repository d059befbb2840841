package alert

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/image/testenv"
)

// These tests move the dispatcher's clock instead of waiting out a backoff, a grace
// period or a rate limit on the wall clock.

// onClock is a dispatcher on a fake clock with one JSON-lines sink, "down", pointed at
// a loopback port nothing listens on (yet); it is stopped when the test ends.
func onClock(t *testing.T) (*Dispatcher, *testenv.FakeClock, string) {
	t.Helper()
	clk := testenv.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := Config{Hostname: "h", Sinks: []SinkConfig{{Name: "down", Type: TypeJSONL, Transport: "tcp",
		Address: addr, SpoolMaxBytes: 64 << 10, BackoffMin: time.Hour, BackoffMax: time.Hour}}}
	d, err := NewWithClock(cfg, t.TempDir(), nil, nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNow(d) })
	return d, clk, addr
}

// TestHealthyGraceOnClock: a sink that holds alerts and has never delivered is healthy
// for the grace period from the start, unhealthy once the clock passes it.
func TestHealthyGraceOnClock(t *testing.T) {
	d, clk, _ := onClock(t)
	emitN(t, d, 0, 1)
	waitFor(t, 30*time.Second, "the first delivery to fail", func() bool { return d.Status()[0].LastError != "" })
	if err := d.Healthy(5 * time.Minute); err != nil {
		t.Errorf("Healthy(5m) at the start: %v, want nil (within the grace)", err)
	}
	clk.Advance(5*time.Minute + time.Second)
	if err := d.Healthy(5 * time.Minute); err == nil || !strings.Contains(err.Error(), "alert sink down") {
		t.Errorf("Healthy(5m) 5m1s after the start: %v, want sink down named", err)
	}
}

// TestSpoolFullAlertOncePerMinute: a full spool raises one alert-spool-full, however
// much more is dropped within the minute, and another once the minute has passed.
func TestSpoolFullAlertOncePerMinute(t *testing.T) {
	d, clk, _ := onClock(t)
	fill := func(from int) {
		for i := from; i < from+200; i++ {
			e := testEvent(i)
			e.SetSeverity(SevInfo)
			if err := d.Emit(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	full := func() int {
		recs, _ := d.sp.read("down", 0, 1000, 1<<30)
		n := 0
		for _, r := range recs {
			if strings.Contains(string(r.data), `"action":"alert-spool-full"`) {
				n++
			}
		}
		return n
	}
	fill(0)
	waitFor(t, 10*time.Second, "the first alert-spool-full", func() bool { return full() >= 1 })
	fill(200) // dropped again within the minute; Emit returns once the writer has them
	if n := full(); n != 1 {
		t.Fatalf("%d alert-spool-full within a minute, want 1", n)
	}
	clk.Advance(time.Minute)
	fill(400)
	waitFor(t, 10*time.Second, "a second alert-spool-full a minute later", func() bool { return full() == 2 })
}

// TestBackoffOnClock: a sink that failed waits its backoff (an hour here) on the
// dispatcher's clock; moved past it, the sink reconnects and delivers.
func TestBackoffOnClock(t *testing.T) {
	d, clk, addr := onClock(t)
	emitN(t, d, 0, 10)
	waitFor(t, 30*time.Second, "the sink to fail and wait out its backoff", func() bool {
		return d.Status()[0].LastError != "" && clk.Waiters() == 1
	})
	rcv := newLineReceiverAt(t, addr)
	clk.Advance(time.Hour)
	waitFor(t, 30*time.Second, "the 10 alerts at the receiver once the clock passed the backoff", func() bool {
		return len(rcv.all()) == 10
	})
}
