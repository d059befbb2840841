package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/domainm/domainm/appliance/internal/supervisor"
	"github.com/domainm/domainm/detectors/yara"
)

// fakeCheck runs a function as the wrapped check.
type fakeCheck func() (supervisor.DiskReport, error)

func (f fakeCheck) Check(context.Context, *yara.Rules) (supervisor.DiskReport, error) { return f() }

// TestStorageProbe: an image that cannot be read before or after the check, or a check
// failing with EIO, is a StorageError with the report dropped (and a baseline recorded
// meanwhile removed); other failures and good checks pass through.
func TestStorageProbe(t *testing.T) {
	dir := t.TempDir()
	img, db := filepath.Join(dir, "t.img"), filepath.Join(dir, "baseline.db")
	if err := os.WriteFile(img, make([]byte, 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	isStorage := func(err error) bool {
		var se *supervisor.StorageError
		return errors.As(err, &se) && se.Path == img
	}
	p := storageProbe{image: img, db: db}

	p.DiskChecker = fakeCheck(func() (supervisor.DiskReport, error) { return supervisor.DiskReport{Entries: 3}, nil })
	if rep, err := p.Check(context.Background(), nil); err != nil || rep.Entries != 3 {
		t.Errorf("good check: %+v, %v", rep, err)
	}
	p.DiskChecker = fakeCheck(func() (supervisor.DiskReport, error) { return supervisor.DiskReport{}, syscall.EIO })
	if _, err := p.Check(context.Background(), nil); !isStorage(err) {
		t.Errorf("EIO from the check: %v, want a StorageError", err)
	}
	p.DiskChecker = fakeCheck(func() (supervisor.DiskReport, error) { return supervisor.DiskReport{}, errors.New("bad policy") })
	if _, err := p.Check(context.Background(), nil); err == nil || isStorage(err) {
		t.Errorf("a non-I/O failure: %v, want it passed through", err)
	}
	// The storage goes away during a check that recorded a baseline.
	p.DiskChecker = fakeCheck(func() (supervisor.DiskReport, error) {
		os.WriteFile(db, []byte("partial"), 0o600)
		os.Remove(img)
		return supervisor.DiskReport{BaselineCreated: true, Entries: 1}, nil
	})
	rep, err := p.Check(context.Background(), nil)
	if !isStorage(err) || rep.Entries != 0 {
		t.Errorf("image gone during the check: %+v, %v, want a StorageError and no report", rep, err)
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("baseline recorded while the storage went away was kept: %v", err)
	}
	// Gone before the check: the check does not run.
	ran := false
	p.DiskChecker = fakeCheck(func() (supervisor.DiskReport, error) { ran = true; return supervisor.DiskReport{}, nil })
	if _, err := p.Check(context.Background(), nil); !isStorage(err) || ran {
		t.Errorf("image gone before the check: %v (check ran: %v)", err, ran)
	}
}
