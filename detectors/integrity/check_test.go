package integrity

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
)

// TestCheck: RecordBaseline writes a baseline of a real ext4 image, debugfs adds,
// removes and changes files, and Check (through OpenBaseline and OpenImage, as domainm
// check and the daemon call it) reports the three kinds in AIDE's order (added, removed,
// changed, each by path); Record sees the new walk, and an unchanged image reports nothing.
func TestCheck(t *testing.T) {
	img := ext4test.Image(t, map[string]string{"etc/a": "a", "etc/b": "b", "etc/c": "c", "etc/d": "d"}, 8)
	p, err := ParsePolicy("all.toml", []byte(allPolicy))
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "baseline.db")
	ctx := context.Background()
	check := func() ([]Change, int) {
		t.Helper()
		b, err := OpenBaseline(db)
		if err != nil {
			t.Fatal(err)
		}
		fsys, closer, _, err := OpenImage(img, "raw", -1)
		if err != nil {
			t.Fatal(err)
		}
		defer closer.Close()
		seen := 0
		cs, _, err := Check(ctx, fsys, b, CheckOptions{Workers: 2, Record: func(*Record) error { seen++; return nil }})
		if err != nil {
			t.Fatal(err)
		}
		return cs, seen
	}
	fsys, closer, info, err := OpenImage(img, "", -1)
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "raw" {
		t.Errorf("probed format %q, want raw", info.Format)
	}
	st, err := RecordBaseline(ctx, fsys, p, NewHeader(p, info, time.Now()), db, Options{Workers: 2}, nil)
	closer.Close()
	if err != nil || st.Records < 5 {
		t.Fatalf("baseline: %d records, %v", st.Records, err)
	}
	if cs, seen := check(); len(cs) != 0 || int64(seen) != st.Records {
		t.Fatalf("unchanged image: %d changes (%+v), %d records seen, want 0 and %d", len(cs), cs, seen, st.Records)
	}
	ext4test.Debugfs(t, img, "rm /etc/b", "rm /etc/d", "write /dev/null /etc/zz", "write /dev/null /etc/aa", "sif /etc/c mode 0104755", "sif /etc/a uid 7")
	cs, _ := check()
	var got []string
	for _, c := range cs {
		got = append(got, string(c.Kind)+" "+c.Path)
	}
	want := []string{"added /etc/aa", "added /etc/zz", "removed /etc/b", "removed /etc/d", "changed /etc/a", "changed /etc/c"}
	if len(got) != len(want) {
		t.Fatalf("changes %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("change %d: %q, want %q (all: %q)", i, got[i], want[i], got)
		}
	}
}
