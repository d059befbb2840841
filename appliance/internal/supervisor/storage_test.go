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
// however many checks fail, but only from the second failed check in a row, which comes
// storageRetry after the first (not a disk.interval later); the next check that reads
// the image clears it with one storage-back alert, and a change made meanwhile is
// alerted once.
func TestStorageOutage(t *testing.T) {
	d := &outageDisk{scriptedDisk: scriptedDisk{gate: make(chan struct{})}}
	close(d.gate)
	h := newHarness(t, harnessOpts{disk: d})
	checks := func() int { return h.sup.Status(context.Background()).DiskChecks }
	h.waitFor("first check", func() bool { return checks() == 1 })

	d.setDown(true)
	n := d.calls.Load()
	h.clk.Advance(time.Hour)
	h.waitFor("first failed check", func() bool { return d.calls.Load() == n+1 })
	if hasProblem(h, control.ProblemDiskUnreachable) || len(h.alerts.with("disk-storage-unreachable", "")) != 0 {
		t.Fatalf("one failed check reported the storage unreachable:\n%s", h.alerts.dump())
	}
	retried := advanceUntil(h, "second failed check", func() bool { return d.calls.Load() == n+2 })
	checkRetry(t, h, retried)
	h.waitFor("disk-unreachable after the second failed check", func() bool { return hasProblem(h, control.ProblemDiskUnreachable) })
	for range 2 {
		n := d.calls.Load()
		h.clk.Advance(time.Hour)
		h.waitFor("failed check", func() bool { return d.calls.Load() > n && hasProblem(h, control.ProblemDiskUnreachable) })
	}
	if k := len(h.alerts.with("disk-storage-unreachable", "")); k != 1 {
		t.Errorf("%d storage-unreachable alerts over 4 failed checks, want 1:\n%s", k, h.alerts.dump())
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

// TestStorageBlip: one check that cannot read the image (a soft NFS mount timing out
// once on a loaded server) raises no alert and no problem: the check is retried
// storageRetry later, not a disk.interval later, and when that one reads the image
// nothing is reported; a later single failure is again only retried (the count starts
// over after a good check).
func TestStorageBlip(t *testing.T) {
	d := &outageDisk{scriptedDisk: scriptedDisk{gate: make(chan struct{})}}
	close(d.gate)
	h := newHarness(t, harnessOpts{disk: d})
	checks := func() int { return h.sup.Status(context.Background()).DiskChecks }
	h.waitFor("first check", func() bool { return checks() == 1 })

	for i := 1; i <= 2; i++ {
		d.setDown(true)
		n := d.calls.Load()
		h.clk.Advance(time.Hour)
		h.waitFor("failed check", func() bool { return d.calls.Load() == n+1 })
		d.setDown(false)
		if hasProblem(h, control.ProblemDiskUnreachable) {
			t.Fatalf("blip %d: one failed check named disk-unreachable", i)
		}
		checkRetry(t, h, advanceUntil(h, "the retry reads the image", func() bool { return checks() == 1+i }))
	}
	for _, a := range []string{"disk-storage-unreachable", "disk-storage-back", "disk-check-failed"} {
		if k := len(h.alerts.with(a, "")); k != 0 {
			t.Errorf("%d %s alerts after two single failed checks, want 0:\n%s", k, a, h.alerts.dump())
		}
	}
	if err := h.sup.Healthy(); err != nil {
		t.Errorf("Healthy() = %v after the blips", err)
	}
}

// advanceUntil moves the fake clock on by a second at a time until cond holds and
// returns how far it moved.
func advanceUntil(h *harness, what string, cond func() bool) time.Duration {
	h.t.Helper()
	var moved time.Duration
	h.waitFor(what, func() bool {
		if cond() {
			return true
		}
		h.clk.Advance(time.Second)
		moved += time.Second
		return false
	})
	return moved
}

// checkRetry: a check after a single storage failure came storageRetry later (a few
// steps more if the loop was slow to set its timer), long before disk.interval.
func checkRetry(t *testing.T, h *harness, after time.Duration) {
	t.Helper()
	if after < storageRetry || after >= h.cfg.Disk.Interval/2 {
		t.Errorf("the check after one storage failure came %v later, want %v (disk.interval %v)", after, storageRetry, h.cfg.Disk.Interval)
	}
	t.Logf("retried %v after a storage failure (storageRetry %v, disk.interval %v)", after, storageRetry, h.cfg.Disk.Interval)
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
