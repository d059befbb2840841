package supervisor

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
)

// scriptedDisk returns the findings the test sets; while gate is shut a check blocks
// (a hung NFS read). The real checker is tested end to end in appliance/internal/cli.
type scriptedDisk struct {
	calls atomic.Int32
	mu    sync.Mutex
	fs    []detectors.Finding
	gate  chan struct{}
}

func (d *scriptedDisk) Check(ctx context.Context, _ *yara.Rules) (DiskReport, error) {
	d.calls.Add(1)
	d.mu.Lock()
	g, fs := d.gate, d.fs
	d.mu.Unlock()
	select {
	case <-g:
	case <-ctx.Done():
		return DiskReport{}, ctx.Err()
	}
	return DiskReport{Findings: fs, Entries: 100}, nil
}

func (d *scriptedDisk) set(fs ...detectors.Finding) {
	d.mu.Lock()
	d.fs = fs
	d.mu.Unlock()
}

func change(path, sha string) detectors.Finding {
	return detectors.Finding{Detector: "integrity", Rule: "integrity-changed", Path: path, Change: "changed",
		File: &detectors.FileInfo{SHA256: sha}, Before: &detectors.FileInfo{SHA256: "old"},
		Changes: []detectors.AttrChange{{Attr: "sha256", Before: "old", After: sha}}}
}

// TestDiskSchedule: checks run every disk interval, one at a time; a change is alerted
// once while it persists and again when it changes further; a hung check is never
// overlapped and makes the supervisor unhealthy once overdue.
func TestDiskSchedule(t *testing.T) {
	d := &scriptedDisk{gate: make(chan struct{})}
	close(d.gate)
	d.set(change("/etc/passwd", "aaa"))
	h := newHarness(t, harnessOpts{disk: d})
	checks := func() int { return h.sup.Status(context.Background()).DiskChecks }
	h.waitFor("first check", func() bool { return checks() == 1 })
	if k := len(h.alerts.with("file-changed", "")); k != 1 {
		t.Fatalf("%d file-changed alerts after the first check, want 1:\n%s", k, h.alerts.dump())
	}
	h.clk.Advance(time.Hour)
	h.waitFor("second check", func() bool { return checks() == 2 })
	if k := len(h.alerts.with("file-changed", "")); k != 1 {
		t.Errorf("a persisting change was alerted %d times", k)
	}
	d.set(change("/etc/passwd", "bbb"), change("/etc/shadow", "ccc"))
	h.clk.Advance(time.Hour)
	h.waitFor("third check", func() bool { return checks() == 3 })
	if k := len(h.alerts.with("file-changed", "")); k != 3 {
		t.Errorf("%d file-changed alerts, want 3 (passwd changed again, shadow new):\n%s", k, h.alerts.dump())
	}

	// A hung check.
	d.mu.Lock()
	d.gate = make(chan struct{})
	d.mu.Unlock()
	h.clk.Advance(time.Hour)
	h.waitFor("fourth check to start", func() bool { return d.calls.Load() == 4 })
	for range 5 {
		h.clk.Advance(time.Hour)
		time.Sleep(10 * time.Millisecond)
	}
	if n := d.calls.Load(); n != 4 {
		t.Errorf("%d checks started while one hung, want 4", n)
	}
	if err := h.sup.Healthy(); err == nil {
		t.Error("Healthy() = nil with a disk check hung for 5 intervals")
	}
	close(d.gate)
	// The hung check finishes; being overdue, one more runs at once, and only one.
	h.waitFor("checks four and five", func() bool { return checks() == 5 })
	time.Sleep(50 * time.Millisecond)
	if n := d.calls.Load(); n != 5 {
		t.Errorf("%d checks after the hang, want 5 (missed ticks are not made up)", n)
	}
	if err := h.sup.Healthy(); err != nil {
		t.Errorf("Healthy() = %v after the check finished", err)
	}
}
