package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/domainm/domainm/appliance/internal/supervisor"
	"github.com/domainm/domainm/detectors/yara"
)

// storageProbe tells a gone storage from a finding. The image sits on shared storage
// (an NFS export mounted soft, so reads fail instead of hanging); when the export goes
// away, a check fails or, worse, reads half the image and reports what it could not
// read as changes. So the image is read before and after each check: if either read
// fails, or the check failed with an I/O error, the check is a supervisor.StorageError
// and its report is dropped (the next check that reads the image compares with the same
// baseline, so nothing is lost); a baseline recorded by a check that lost its storage
// is removed, to be recorded again.
type storageProbe struct {
	supervisor.DiskChecker
	image, db string
}

func (p storageProbe) Check(ctx context.Context, rules *yara.Rules) (supervisor.DiskReport, error) {
	if err := probeImage(p.image); err != nil {
		return supervisor.DiskReport{}, &supervisor.StorageError{Path: p.image, Err: err}
	}
	rep, err := p.DiskChecker.Check(ctx, rules)
	if perr := probeImage(p.image); perr != nil {
		if rep.BaselineCreated {
			os.Remove(p.db)
		}
		return supervisor.DiskReport{}, &supervisor.StorageError{Path: p.image, Err: perr}
	}
	if err != nil && ioError(err) {
		return supervisor.DiskReport{}, &supervisor.StorageError{Path: p.image, Err: err}
	}
	return rep, err
}

// probeImage opens the image (on NFS: a fresh GETATTR, close-to-open) and reads its
// first and last 4 KiB.
func probeImage(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for _, off := range []int64{0, max(0, fi.Size()-int64(len(buf)))} {
		if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading %s at %d: %w", path, off, err)
		}
	}
	return nil
}

// ioError: the errors a soft NFS mount (or a failing disk) returns for a read.
func ioError(err error) bool {
	for _, e := range []error{syscall.EIO, syscall.ETIMEDOUT, syscall.ESTALE, syscall.ENOTCONN, syscall.EHOSTUNREACH, syscall.ENETUNREACH} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
