package integrity

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan"
)

// Test images are real ext4 filesystems made with mkfs.ext4 -d and changed with
// debugfs -w (never mounted; diskscan/ext4test), read through diskscan as the
// appliance reads them.

// allPolicy selects every path with every attribute but sha512.
const allPolicy = `version = 1
[[select]]
name = "all"
paths = ["/"]
attrs = ["content", "xattrs", "nlink"]
`

// collectImage walks a bare filesystem image with the policy and returns its records.
// With cmp set, every record is also compared and the changes are returned.
func collectImage(t testing.TB, img string, p *Policy, cmp *Comparer) ([]*Record, []Change) {
	t.Helper()
	fsys, closer, err := diskscan.OpenVolumeFormat(img, "raw", -1)
	if err != nil {
		t.Fatalf("opening %s: %v", img, err)
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opt := Options{Workers: 2}
	if cmp != nil {
		opt.Baseline = cmp.Baseline
	}
	var recs []*Record
	var changes []Change
	_, err = Collect(ctx, fsys, p, opt, func(r *Record) error {
		recs = append(recs, r)
		if cmp != nil {
			if c := cmp.Add(r); c != nil {
				changes = append(changes, *c)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("collecting %s: %v", img, err)
	}
	if cmp != nil {
		changes = append(changes, cmp.Removed()...)
	}
	return recs, changes
}

// roundTrip writes records to a baseline DB and reads them back, as check does.
func roundTrip(t testing.TB, p *Policy, recs []*Record) []*Record {
	t.Helper()
	db := filepath.Join(t.TempDir(), "base.db")
	w, err := CreateDB(db, NewHeader(p, ImageInfo{Path: "test"}, t0))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, r := range recs {
		if err := w.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(Stats{}); err != nil {
		t.Fatal(err)
	}
	_, back, _, err := ReadDB(db)
	if err != nil {
		t.Fatal(err)
	}
	return back
}
