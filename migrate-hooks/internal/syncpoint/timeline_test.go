package syncpoint

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

func TestTimelineCheck(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	base := Timeline{
		{at(0), SubjectTarget, "src/target", true, "initial"},
		{at(0), SubjectDomM, "src/domm", true, "initial"},
		{at(0), SubjectSupervisor, "supervisor", true, "initial"},
		{at(0), SubjectTarget, "dst/target", false, "initial"},
		{at(0), SubjectDomM, "dst/domm", false, "initial"},
	}
	good := append(append(Timeline{}, base...),
		Change{at(100), SubjectTarget, "src/target", false, "STOP"},
		Change{at(101), SubjectSupervisor, "supervisor", false, "prepare sent"},
		Change{at(150), SubjectDomM, "src/domm", false, "STOP"},
		Change{at(300), SubjectDomM, "dst/domm", true, "RESUME"},
		Change{at(310), SubjectSupervisor, "supervisor", true, "resume answered"},
		Change{at(320), SubjectTarget, "dst/target", true, "RESUME"},
	)
	for _, tc := range []struct {
		name    string
		tl      Timeline
		wantN   int
		wantGap time.Duration
	}{
		{"ordered", good, 0, 0},
		{"domain M stops first", append(append(Timeline{}, base...),
			Change{at(90), SubjectDomM, "src/domm", false, "STOP"},
			Change{at(100), SubjectTarget, "src/target", false, "STOP"}), 1, 10 * time.Millisecond},
		{"target resumed before the supervisor answered", append(append(Timeline{}, good[:len(good)-2]...),
			Change{at(305), SubjectTarget, "dst/target", true, "RESUME"},
			Change{at(310), SubjectSupervisor, "supervisor", true, "resume answered"}), 1, 5 * time.Millisecond},
		{"simultaneous changes apply together", append(append(Timeline{}, base...),
			Change{at(100), SubjectDomM, "src/domm", false, "STOP"},
			Change{at(100), SubjectTarget, "src/target", false, "STOP"},
			Change{at(200), SubjectTarget, "dst/target", true, "RESUME"},
			Change{at(200), SubjectDomM, "dst/domm", true, "RESUME"}), 0, 0},
		{"restarted at source while unwatched", append(append(Timeline{}, good...),
			Change{at(400), SubjectSupervisor, "supervisor", false, "prepare sent"}), 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs, gap := tc.tl.Check()
			if len(vs) != tc.wantN || gap != tc.wantGap {
				t.Errorf("got %d violations %v, gap %v; want %d, %v", len(vs), vs, gap, tc.wantN, tc.wantGap)
			}
			if (tc.tl.Err() == nil) != (tc.wantN == 0) {
				t.Errorf("Err() = %v", tc.tl.Err())
			}
		})
	}
}

// A violation still open when the record ends is counted up to the end of observation,
// and the record fails (issue 8, item 9: such a record used to pass with gap 0).
func TestTimelineCheckOpenAtEnd(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tl := Timeline{
		{at(0), SubjectTarget, "src/target", true, "initial"},
		{at(0), SubjectDomM, "src/domm", true, "initial"},
		{at(0), SubjectSupervisor, "supervisor", true, "initial"},
		{at(100), SubjectSupervisor, "supervisor", false, "prepare sent"},
		{at(400), SubjectEnd, "coordinator", false, "end of observation"},
	}
	vs, gap := tl.Check()
	if len(vs) != 1 || gap != 300*time.Millisecond || !vs[0].Open || !vs[0].To.Equal(at(400)) {
		t.Errorf("got %+v, gap %v; want one open violation 100..400 ms, gap 300ms", vs, gap)
	}
	if tl.Err() == nil {
		t.Error("Err() = nil for a record that ends with the target unwatched")
	}
	// Without an end marker the record's last change ends the observation.
	vs, gap = tl[:4].Check()
	if len(vs) != 1 || !vs[0].Open || tl[:4].Err() == nil {
		t.Errorf("without end marker: %+v, gap %v, err %v; want one open violation and an error", vs, gap, tl[:4].Err())
	}
	// A violation that closes before the end is not open, and the end adds nothing.
	closed := append(append(Timeline{}, tl[:4]...),
		Change{at(200), SubjectSupervisor, "supervisor", true, "resume answered (source)"},
		tl[4])
	if vs, gap := closed.Check(); len(vs) != 1 || vs[0].Open || gap != 100*time.Millisecond {
		t.Errorf("closed: %+v, gap %v; want one closed violation of 100ms", vs, gap)
	}
}

// A co-migration that fails before anything was observed reports no figure at all, not
// a gap of 0 (issue 8, item 9).
func TestNothingObservedIsAbsent(t *testing.T) {
	r, err := Run(context.Background(), Side{}, Side{}, nil, Config{Mode: Sync})
	if err == nil {
		t.Fatal("Run without a supervisor succeeded")
	}
	b, _ := json.Marshal(r)
	var m map[string]json.RawMessage
	json.Unmarshal(b, &m)
	for _, f := range []string{"gap_ns", "total_ns", "target_downtime_ns", "p1_margin_ns"} {
		if string(m[f]) != "null" {
			t.Errorf("%s = %s, want null: nothing was observed", f, m[f])
		}
	}
}
