package xenctl

import (
	"reflect"
	"testing"

	"github.com/domainm/domainm/memscan"
)

// TestRunsFormat: the runs dom0 writes to domainm/frames are what memscan reads back.
func TestRunsFormat(t *testing.T) {
	present := make([]byte, 0xff000)
	for i := 0; i < 0x8000; i++ {
		present[i] = 1
	}
	for i := 0xfeff0; i < 0xff000; i++ {
		present[i] = 1
	}
	present[0x9000] = 1
	rs := runsOf(present)
	want := []FrameRun{{0, 0x8000}, {0x9000, 1}, {0xfeff0, 0x10}}
	if !reflect.DeepEqual(rs, want) {
		t.Fatalf("runsOf = %v, want %v", rs, want)
	}
	s := FormatRuns(rs)
	if s != "0x0+0x8000 0x9000+0x1 0xfeff0+0x10" {
		t.Fatalf("FormatRuns = %q", s)
	}
	got, err := memscan.ParseXenFrames(s)
	if err != nil {
		t.Fatal(err)
	}
	wantR := []memscan.Range{{GPA: 0, Size: 0x8000 << 12}, {GPA: 0x9000 << 12, Size: 1 << 12}, {GPA: 0xfeff0 << 12, Size: 0x10 << 12}}
	if !reflect.DeepEqual(got, wantR) {
		t.Fatalf("ParseXenFrames(%q) = %v, want %v", s, got, wantR)
	}
	if runsOf(make([]byte, 10)) != nil {
		t.Fatal("no frames present: want no runs")
	}
}

// TestSuspended: the coordinator's prepare waits for a suspend, and fails fast on a
// domain that went away or stopped for another reason (it will never suspend).
func TestSuspended(t *testing.T) {
	for _, c := range []struct {
		name   string
		st     DomainState
		exists bool
		done   bool
		err    bool
	}{
		{"running", DomainState{}, true, false, false},
		{"paused", DomainState{Paused: true}, true, false, false},
		{"suspended", DomainState{Shutdown: true, Reason: shutdownSuspend}, true, true, false},
		{"suspended and paused", DomainState{Shutdown: true, Reason: shutdownSuspend, Paused: true}, true, true, false},
		{"powered off", DomainState{Shutdown: true, Reason: 0}, true, false, true},
		{"crashed", DomainState{Shutdown: true, Reason: 3}, true, false, true},
		{"dying", DomainState{Dying: true, Shutdown: true, Reason: shutdownSuspend}, true, false, true},
		{"gone", DomainState{}, false, false, true},
	} {
		done, err := suspended(7, c.st, c.exists)
		if done != c.done || (err != nil) != c.err {
			t.Errorf("%s: done %v err %v, want done %v err %v", c.name, done, err, c.done, c.err)
		}
	}
}
