package supervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/internal/alert"
)

// StorageError is a disk check that could not read the target's image because the
// storage under it is gone (an NFS export whose server stopped, a soft mount timing
// out): not a finding about the target, and not the checker's own failure. The
// checker returns it (errors.As) and the supervisor reports the named problem
// disk-unreachable until a check reads the image again; the check that does compares
// with the same baseline, so nothing changed meanwhile is lost.
type StorageError struct {
	Path string
	Err  error
}

func (e *StorageError) Error() string {
	return fmt.Sprintf("the target's disk image %s cannot be read (its storage is unreachable): %v", e.Path, e.Err)
}

func (e *StorageError) Unwrap() error { return e.Err }

// storageConfirm is how many checks in a row must fail with a StorageError before the
// storage is reported unreachable, and storageRetry how soon a check that failed so,
// without being confirmed, is tried again (at most disk.interval). The image's NFS mount
// is soft with short timeouts (ro,soft,timeo=20,retrans=2: EIO after about 12 s
// without an answer), so one slow answer from a loaded server would otherwise raise a
// high-severity alert and a problem for a whole disk.interval.
const (
	storageConfirm = 2
	storageRetry   = 15 * time.Second
)

// storageFailed handles a check that failed with a StorageError: the first of a run is
// only logged and retried soon (retry), the storageConfirm-th raises the alert (once
// per outage) and the problem (until a check succeeds). It reports whether err was one.
func (d *diskLoop) storageFailed(now time.Time, err error) (storage, retry bool) {
	var se *StorageError
	if !errors.As(err, &se) {
		return false, false
	}
	d.mu.Lock()
	d.storageFails++
	fails := d.storageFails
	first := d.unreachable == ""
	if fails >= storageConfirm {
		d.unreachable = se.Error()
	}
	d.mu.Unlock()
	if fails < storageConfirm {
		d.s.log.Warn("the target's disk image could not be read; checking again before reporting its storage unreachable",
			"err", se.Error(), "failed_in_a_row", fails, "retry_in", d.storageRetry())
		return true, true
	}
	if first {
		d.s.emit(alert.Health(now, alert.SevHigh, "disk", "storage-unreachable",
			fmt.Sprintf("%s (%d checks in a row); disk checks resume by themselves when it is back", se.Error(), fails)))
	}
	return true, false
}

// storageRetry is how soon an unconfirmed storage failure is checked again.
func (d *diskLoop) storageRetry() time.Duration {
	return min(storageRetry, d.s.diskInterval())
}

// storageBack clears the problem after a successful check and says so once.
func (d *diskLoop) storageBack(now time.Time) {
	d.mu.Lock()
	was := d.unreachable
	d.unreachable = ""
	d.storageFails = 0
	d.mu.Unlock()
	if was != "" {
		d.s.emit(alert.Health(now, alert.SevInfo, "disk", "storage-back",
			fmt.Sprintf("the target's disk image %s can be read again; disk checks resumed", d.s.cfg.Target.Disk)))
	}
}

// storageProblem is the health problem while the storage is unreachable.
func (d *diskLoop) storageProblem() (code, msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.unreachable == "" {
		return "", ""
	}
	return control.ProblemDiskUnreachable, d.unreachable
}
