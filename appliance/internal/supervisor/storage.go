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

// storageFailed handles a check that failed with a StorageError: the alert once per
// outage, the problem until a check succeeds. It reports whether err was one.
func (d *diskLoop) storageFailed(now time.Time, err error) bool {
	var se *StorageError
	if !errors.As(err, &se) {
		return false
	}
	d.mu.Lock()
	first := d.unreachable == ""
	d.unreachable = se.Error()
	d.mu.Unlock()
	if first {
		d.s.emit(alert.Health(now, alert.SevHigh, "disk", "storage-unreachable",
			se.Error()+"; disk checks resume by themselves when it is back"))
	}
	return true
}

// storageBack clears the problem after a successful check and says so once.
func (d *diskLoop) storageBack(now time.Time) {
	d.mu.Lock()
	was := d.unreachable
	d.unreachable = ""
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
