package supervisor

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/detectors/yara"
)

// outageDisk fails with a StorageError while down, else returns the scripted findings.
type outageDisk struct {
	scriptedDisk
	down bool
}

func (d *outageDisk) Check(ctx context.Context, r *yara.Rules) (DiskReport, error) {
	d.mu.Lock()
	down := d.down
	d.mu.Unlock()
	if down {
		d.calls.Add(1)
		return DiskReport{}, &StorageError{Path: "/images/t1.img", Err: syscall.EIO}
	}
	return d.scriptedDisk.Check(ctx, r)
}

func (d *outageDisk) setDown(v bool) {
	d.mu.Lock()
	d.down = v
	d.mu.Unlock()
}

// TestStorageOutage: while the image's storage is gone the status names
// disk-unreachable (not disk-check-failed) and one disk-storage-unreachable alert says so,
// however many checks fail; the next check that reads the image clears it with one
// storage-back alert, and a change made meanwhile is alerted once.
func TestStorageOutage(t *testing.T) {
	d := &outageDisk{scriptedDisk: scriptedDisk{gate: make(chan struct{})}}
	close(d.gate)
	h := newHarness(t, harnessOpts{disk: d})
	checks := func() int { return h.sup.Status(context.Background()).DiskChecks }
	h.waitFor("first check", func() bool { return checks() == 1 })

	d.setDown(true)
	for range 3 {
		n := d.calls.Load()
		h.clk.Advance(time.Hour)
		h.waitFor("failed check", func() bool { return d.calls.Load() > n && hasProblem(h, control.ProblemDiskUnreachable) })
	}
	if k := len(h.alerts.with("disk-storage-unreachable", "")); k != 1 {
		t.Errorf("%d storage-unreachable alerts over 3 failed checks, want 1:\n%s", k, h.alerts.dump())
	}
	if hasProblem(h, control.ProblemDiskFailed) {
		t.Errorf("an unreachable image is reported as disk-check-failed too")
	}
	if err := h.sup.Healthy(); err == nil || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("Healthy() = %v, want the unreachable image named", err)
	}

	d.set(change("/usr/bin/planted", "new"))
	d.setDown(false)
	h.clk.Advance(time.Hour)
	h.waitFor("check after the outage", func() bool { return checks() == 2 })
	h.waitFor("problem cleared", func() bool { return !hasProblem(h, control.ProblemDiskUnreachable) })
	if k := len(h.alerts.with("disk-storage-back", "")); k != 1 {
		t.Errorf("%d storage-back alerts, want 1", k)
	}
	h.clk.Advance(time.Hour)
	h.waitFor("one more check", func() bool { return checks() == 3 })
	if k := len(h.alerts.with("file-changed", "")); k != 1 {
		t.Errorf("the change made during the outage was alerted %d times, want 1:\n%s", k, h.alerts.dump())
	}
}

func hasProblem(h *harness, code string) bool {
	err := h.sup.Healthy()
	return err != nil && strings.Contains(err.Error(), code+":")
}

func TestStorageErrorUnwraps(t *testing.T) {
	err := error(&StorageError{Path: "/x", Err: syscall.ETIMEDOUT})
	if !errors.Is(err, syscall.ETIMEDOUT) || !strings.Contains(err.Error(), "/x") {
		t.Errorf("%v", err)
	}
}
