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
