package xenctl

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control/xenstore"

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

type memStore map[string]string

func (m memStore) Read(p string) (string, error) {
	v, ok := m[p]
	if !ok {
		return "", xenstore.ErrNotFound
	}
	return v, nil
}

func (m memStore) Write(p, v string) error { m[p] = v; return nil }

// TestFollow: dom0 rewrites domainm/frames when Xen's p2m of the target changes (a
// frame populated above 4 GiB, where Domain M's sweep never looks), leaves it alone
// when unchanged or too long for one node, and stops when the target is gone or a
// later grant names another target.
func TestFollow(t *testing.T) {
	xs := memStore{"/local/domain/2/domainm/target": "1", "/local/domain/2/domainm/frames": "0x0+0x8000"}
	// (gone once the last list was read: that read is dropped, so the new frame is read twice)
	p2m := [][]FrameRun{{{0, 0x8000}}, {{0, 0x8000}}, {{0, 0x8000}, {0x140000, 1}}, {{0, 0x8000}, {0x140000, 1}}}
	step, writes := 0, 0
	var out strings.Builder
	x := followXen{
		state: func(dom uint32) (DomainState, bool, error) { return DomainState{}, step < len(p2m), nil },
		frames: func(dom uint32) ([]FrameRun, error) {
			r := p2m[step]
			step++
			return r, nil
		},
	}
	st := &countingStore{memStore: xs, writes: &writes}
	if err := follow(context.Background(), st, x, 2, 1, time.Millisecond, &out); err != nil {
		t.Fatal(err)
	}
	if v := xs["/local/domain/2/domainm/frames"]; v != "0x0+0x8000 0x140000+0x1" || writes != 1 {
		t.Errorf("frames %q after %d writes; want the frame above 4 GiB added, in one write:\n%s", v, writes, out.String())
	}
	if !strings.Contains(out.String(), "domain 1 is gone") {
		t.Errorf("output %q: want the stop named", out.String())
	}

	// A migration: the target suspends (its p2m is not read, the list stands), then is
	// destroyed while Xen frees its frames (dying): stop, nothing written. Lab run 24
	// wrote the dying domain's shrinking p2m, down to an empty list.
	// (the state is asked before each read and again after it)
	states := []DomainState{{}, {}, {Shutdown: true, Reason: shutdownSuspend}, {Dying: true, Shutdown: true, Reason: shutdownSuspend}}
	p2m, step, writes = [][]FrameRun{{{0, 0x10}, {0x11, 0x7fef}}, {{0, 0x10}}, {}}, 0, 0
	reads, round := 0, 0
	xm := followXen{
		state: func(dom uint32) (DomainState, bool, error) {
			r := round
			round++
			return states[min(r, len(states)-1)], true, nil
		},
		frames: func(dom uint32) ([]FrameRun, error) {
			reads++
			r := p2m[step]
			step++
			return r, nil
		},
	}
	if err := follow(context.Background(), st, xm, 2, 1, time.Millisecond, &out); err != nil {
		t.Fatal(err)
	}
	if v := xs["/local/domain/2/domainm/frames"]; v != "0x0+0x10 0x11+0x7fef" || reads != 1 {
		t.Errorf("through a migration: frames %q after %d p2m reads; want the running domain's list, read once", v, reads)
	}
	// The target stops while its p2m is read: that read is not written.
	xs["/local/domain/2/domainm/frames"] = "0x0+0x8000"
	states = []DomainState{{}, {Shutdown: true, Reason: shutdownSuspend}, {Dying: true}}
	p2m, step, writes, reads, round = [][]FrameRun{{{0, 0x10}}}, 0, 0, 0, 0
	if err := follow(context.Background(), st, xm, 2, 1, time.Millisecond, &out); err != nil || writes != 0 || reads != 1 {
		t.Errorf("stopped while read: err %v, %d writes after %d reads; want the read dropped", err, writes, reads)
	}

	// A later grant (domainm/target 5): stop at once, nothing written.
	xs["/local/domain/2/domainm/target"] = "5"
	step, writes = 0, 0
	if err := follow(context.Background(), st, x, 2, 1, time.Millisecond, &out); err != nil || writes != 0 || step != 0 {
		t.Errorf("after a later grant: err %v, %d writes, %d p2m reads; want none", err, writes, step)
	}

	// Too many runs for one node: left as it is.
	xs["/local/domain/2/domainm/target"] = "1"
	var many []FrameRun
	for i := uint64(0); i < 400; i++ {
		many = append(many, FrameRun{i * 0x1000, 1})
	}
	p2m, step, writes = [][]FrameRun{many}, 0, 0
	if err := follow(context.Background(), st, x, 2, 1, time.Millisecond, &out); err != nil || writes != 0 {
		t.Errorf("a list too long: err %v, %d writes; want none", err, writes)
	}
}

type countingStore struct {
	memStore
	writes *int
}

func (c *countingStore) Write(p, v string) error { *c.writes++; return c.memStore.Write(p, v) }
