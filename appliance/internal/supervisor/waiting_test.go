package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/memscan"
)

// TestWaitingForTarget: a memory source that does not exist at start is waited for
// (READY=1, state waiting, not healthy, prepare and resume refused), polled on the
// clock, and monitored once it opens.
func TestWaitingForTarget(t *testing.T) {
	var present atomic.Bool
	open := func(spec, layout string) (memscan.Source, error) {
		if !present.Load() {
			return nil, fmt.Errorf("open %s: %w", spec, fs.ErrNotExist)
		}
		return OpenSource(spec, layout)
	}
	h := newHarness(t, harnessOpts{open: open}) // returns after READY=1
	ctx := context.Background()
	st := h.sup.Status(ctx)
	if st.State != control.StateWaiting || st.Health == nil || st.Health.Healthy || !strings.Contains(st.Health.Reason, "does not exist") {
		t.Fatalf("status while the source is missing: %+v %+v", st, st.Health)
	}
	if err := h.sup.Healthy(); err == nil || !strings.Contains(err.Error(), "not-monitoring") {
		t.Errorf("Healthy() = %v", err)
	}
	var ce *control.Error
	if _, err := h.sup.Prepare(ctx); !errors.As(err, &ce) || ce.Code != control.CodeWrongState {
		t.Errorf("prepare while waiting: %v", err)
	}
	if _, err := h.sup.Resume(ctx, control.ResumeArgs{Source: "file:" + h.ram}); !errors.As(err, &ce) || ce.Code != control.CodeWrongState {
		t.Errorf("resume while waiting: %v", err)
	}
	if k := len(h.alerts.with("memory-source-waiting", "")); k != 1 {
		t.Errorf("%d waiting alerts, want 1:\n%s", k, h.alerts.dump())
	}
	for range 3 {
		h.clk.Advance(time.Second)
		time.Sleep(10 * time.Millisecond)
	}
	if h.passes() != 0 {
		t.Fatal("a pass ran without a source")
	}
	present.Store(true)
	h.waitFor("evil found", func() bool {
		h.clk.Advance(time.Second) // the poll runs on the supervisor's clock
		return len(h.alerts.with("memory-match", "evil")) == 1
	})
	h.waitFor("healthy", func() bool { return h.sup.Healthy() == nil })
	if st := h.sup.Status(ctx); st.State != control.StateMonitoring || !st.Health.Healthy {
		t.Errorf("status after the source appeared: %+v %+v", st, st.Health)
	}
	if k := len(h.alerts.with("memory-source-appeared", "")); k != 1 {
		t.Errorf("%d appeared alerts, want 1", k)
	}
}

// TestCoalesceBounded: adjacent failed blocks with the same reason join; the list of
// ranges is bounded and the total counted.
func TestCoalesceBounded(t *testing.T) {
	const mib = 1 << 20
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var errs []memscan.BlockError
	for i := 39; i >= 0; i-- { // out of order, as workers report them
		if i%2 == 0 {
			errs = append(errs, memscan.BlockError{GPA: uint64(2*i) * mib, Size: mib, Op: "read", At: at.Add(time.Duration(i) * time.Second), Err: errors.New("x")},
				memscan.BlockError{GPA: uint64(2*i+1) * mib, Size: mib, Op: "read", At: at, Err: errors.New("x")})
		} else {
			errs = append(errs, memscan.BlockError{GPA: uint64(2*i) * mib, Size: mib, Op: "scan", Err: errors.New("x")})
		}
	}
	u := coalesce(errs)
	if u.Bytes != 60*mib || u.Blocks != 60 || u.Reasons["unreadable"] != 40 || u.Reasons["scan-error"] != 20 {
		t.Errorf("totals: %+v", u)
	}
	if u.RangesTotal != 40 || len(u.Ranges) != 16 {
		t.Fatalf("%d ranges listed of %d, want 16 of 40", len(u.Ranges), u.RangesTotal)
	}
	if r := u.Ranges[0]; r.Start != "0x0" || r.End != "0x200000" || r.Reason != "unreadable" || r.First != at.Format(time.RFC3339Nano) {
		t.Errorf("first range %+v", r)
	}
	if r := u.Ranges[1]; r.Start != "0x200000" || r.End != "0x300000" || r.Reason != "scan-error" {
		t.Errorf("second range %+v", r)
	}
	if coalesce(nil) != nil {
		t.Error("no errors: want nil")
	}
}

// TestStartFailureInStateLog: a start that fails leaves the state log at stopped, with
// the reason, not at starting (which would read as a supervisor still coming up).
func TestStartFailureInStateLog(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.stop()
	if err := os.RemoveAll(h.rules); err != nil { // no rules folder: the start fails
		t.Fatal(err)
	}
	sup, err := New(h.cfg, h.deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Run(context.Background()); err == nil {
		t.Fatal("started without a rules folder")
	}
	recs, err := control.ReadStateLog(filepath.Join(h.cfg.State.Dir, control.StateLogFile))
	if err != nil || len(recs) == 0 {
		t.Fatalf("state log: %v", err)
	}
	last := recs[len(recs)-1]
	if last.State != control.StateStopped || !strings.Contains(last.Reason, "start failed") || !strings.Contains(last.Reason, h.rules) || last.Healthy {
		t.Errorf("last state log line after a failed start: %+v", last)
	}
}
