package alert

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
)

var update = flag.Bool("update", false, "rewrite testdata/*.json golden files")

var goldenTime = time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.UTC)

var goldenTarget = detectors.Target{Name: "web1", UUID: "7f8d2a9e-1c3b-4d5e-9f00-aabbccddeeff", DomID: 3, Host: "hv1", Source: "file:/dev/shm/web1"}

func goldenEvents() map[string]Event {
	mem := detectors.Finding{Detector: "yara-memory", Rule: "Linux_Reverse_Shell", Namespace: "linux",
		Tags: []string{"shell"}, Time: goldenTime, Target: goldenTarget,
		Meta: map[string]string{"severity": "high", "description": "reverse shell", "author": "domainm",
			"mitre_attack": "T1059.004", "family": "bash"}}
	sm := detectors.StringMatch{Name: "$dev_tcp", Offset: 0x3f2a1000, Length: 17}
	sm.SetData([]byte("/dev/tcp/10.0.0.1"))
	mem.Matches = []detectors.StringMatch{sm}

	file := detectors.Finding{Detector: "yara-file", Rule: "EICAR", Namespace: "default", Time: goldenTime,
		Target: goldenTarget, Path: "/tmp/eicar.com", Meta: map[string]string{"score": "90"}}
	fm := detectors.StringMatch{Name: "$a", Offset: 0, Length: 68}
	fm.SetData([]byte("X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR"))
	file.Matches = []detectors.StringMatch{fm}

	// As detectors/integrity's Change.Finding makes them.
	integ := detectors.Finding{Detector: "integrity", Rule: "integrity-changed", Namespace: "binaries", Change: "changed",
		Time: goldenTime, Target: goldenTarget, Path: "/usr/bin/sshd",
		File: &detectors.FileInfo{Type: "file", Mode: ptr[uint32](0o4755), Size: ptr[int64](912345),
			SHA256: "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c"},
		Before: &detectors.FileInfo{Mode: ptr[uint32](0o755), Size: ptr[int64](901234),
			SHA256: "7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730"},
		Changes: []detectors.AttrChange{
			{Attr: "mode", Before: "0755 (rwxr-xr-x)", After: "4755 (rwsr-xr-x)"},
			{Attr: "size", Before: "901234", After: "912345"},
			{Attr: "sha256", Before: "7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730",
				After: "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c"}}}
	added := detectors.Finding{Detector: "integrity", Rule: "integrity-added", Namespace: "etc", Change: "added",
		Time: goldenTime, Target: goldenTarget, Path: "/etc/cron.d/x",
		File: &detectors.FileInfo{Type: "file", Size: ptr[int64](120), UID: ptr[uint32](0),
			SHA256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"},
		Changes: []detectors.AttrChange{{Attr: "sha256", After: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}}}

	out := map[string]Event{
		"memory-match":      FromFinding(mem, StateNew),
		"memory-match-gone": FromFinding(mem, StateGone),
		"file-match":        FromFinding(file, StateNew),
		"integrity-changed": FromFinding(integ, ""),
		"integrity-added":   FromFinding(added, ""),
		"rule-error":        RuleError(goldenTime, goldenTarget, "/etc/domainm/rules/bad.yar", 12, `syntax error, unexpected identifier`),
		"health":            Health(goldenTime, SevHigh, "memory-source", "lost", "memory source file:/dev/shm/web1 disappeared"),
	}
	for k, e := range out {
		e.Event.Created = goldenTime
		fillEvent(&e, "domainm-1")
		out[k] = e
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// TestEventGolden pins the JSON schema (the README documents it from these files).
func TestEventGolden(t *testing.T) {
	for name, e := range goldenEvents() {
		raw, err := marshalEvent(&e)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		json.Indent(&buf, raw, "", "  ")
		got := append(buf.Bytes(), '\n')
		path := filepath.Join("testdata", name+".json")
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestEventGolden -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (go test -update rewrites it):\n%s", name, path, got)
		}
	}
}

func TestEventIDs(t *testing.T) {
	ev := goldenEvents()
	a := ev["memory-match"]
	again := goldenEvents()["memory-match"]
	if a.Event.ID != again.Event.ID || a.DomainM.FindingID != again.DomainM.FindingID {
		t.Fatal("the same finding at the same time must give the same ids")
	}
	gone := ev["memory-match-gone"]
	if gone.DomainM.FindingID != a.DomainM.FindingID || gone.Event.ID == a.Event.ID {
		t.Fatal("new and gone: same finding id, different event ids")
	}
	if gone.Severity() != SevLow || a.Severity() != SevHigh {
		t.Fatalf("severities %v %v", a.Severity(), gone.Severity())
	}
	f := detectors.Finding{Detector: "yara-memory", Rule: "R", Time: goldenTime, Target: goldenTarget,
		Matches: []detectors.StringMatch{{Offset: 0x2000}}}
	later := f
	later.Time = goldenTime.Add(time.Hour)
	moved := f
	moved.Matches = []detectors.StringMatch{{Offset: 0x5000}}
	e1, e2, e3 := FromFinding(f, StateNew), FromFinding(later, StateNew), FromFinding(moved, StateNew)
	if e1.DomainM.FindingID != e2.DomainM.FindingID || e1.Event.ID == e2.Event.ID {
		t.Error("a later occurrence keeps the finding id and gets a new event id")
	}
	if e1.DomainM.FindingID == e3.DomainM.FindingID {
		t.Error("a match elsewhere in memory is another finding")
	}
	integ, file := ev["integrity-changed"], ev["file-match"]
	if integ.Severity() != SevHigh || file.Severity() != SevCritical {
		t.Error("integrity /usr/bin → high; score 90 → critical")
	}
}

func TestEventBounds(t *testing.T) {
	f := detectors.Finding{Detector: "yara-memory", Rule: string(bytes.Repeat([]byte("r"), 5000)), Time: goldenTime}
	for i := 0; i < 1000; i++ {
		f.Matches = append(f.Matches, detectors.StringMatch{Name: "$a", Offset: uint64(i)})
	}
	f.Meta = map[string]string{}
	for i := 0; i < 100; i++ {
		f.Meta[string(rune('a'+i%26))+string(rune('a'+i/26))] = string(bytes.Repeat([]byte("v"), 3000))
	}
	e := FromFinding(f, StateNew)
	if len(e.DomainM.Matches) != MaxMatches || e.DomainM.MatchesN != 1000 || len(e.Rule.Name) != maxFieldLen || len(e.DomainM.Meta) != maxMetaKeys {
		t.Fatalf("bounds not applied: %d matches, rule %d bytes, %d meta", len(e.DomainM.Matches), len(e.Rule.Name), len(e.DomainM.Meta))
	}
	d := &Dispatcher{hostname: "h"}
	ent, err := d.encode(&e)
	if err != nil || len(ent.data) > maxEventBytes {
		t.Fatalf("encoded %d bytes (max %d), %v", len(ent.data), maxEventBytes, err)
	}
}
