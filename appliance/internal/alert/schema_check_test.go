package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/domainm/domainm/appliance/internal/alert/schema"

	"github.com/domainm/domainm/detectors"
)

// compileEventSchema compiles schema/event.schema.json with a JSON Schema validator.
func compileEventSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	sch, err := schema.Compile("")
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// realEvents are events of every kind as the dispatcher writes them: the goldens, and
// those this issue added (test alert, a burst's summary and details, an integrity end,
// the rate-limited and baseline-accepted health events), each encoded by a real
// Dispatcher into a file sink and read back.
func realEvents(t *testing.T) map[string][]byte {
	t.Helper()
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	tgt := detectors.Target{Name: "web1", UUID: "7f8d2a9e-1c3b-4d5e-9f00-aabbccddeeff"}
	evs := []Event{TestEvent(now, SevHigh, "root (uid 0) on host"),
		IntegrityEnded(now, tgt, "etc", "changed", "/etc/motd", EndRestored, ""),
		IntegrityEnded(now, tgt, "bin", "added", "/usr/bin/x", EndAccepted, "root (uid 0) on host"),
		Health(now, SevMedium, "alert-sink", "rate-limited", "sink x over its rate_limit")}
	var burst []Event
	for i := range 25 {
		f := detectors.Finding{Detector: "integrity", Rule: "integrity-added", Namespace: "lib", Change: "added",
			Path: fmt.Sprintf("/usr/lib/burst/f%02d", i), Target: tgt, Time: now,
			File: &detectors.FileInfo{Type: "file", Mode: ptr(uint32(0o644))}}
		burst = append(burst, FromFinding(f, ""))
	}
	evs = append(evs, Aggregate(burst, 20)...)
	// Device nodes: diskscan says chardev/blockdev, ECS (and the schema) char/block.
	for _, typ := range []string{"chardev", "blockdev", "fifo", "socket", "symlink", "dir"} {
		evs = append(evs, FromFinding(detectors.Finding{Detector: "integrity", Rule: "integrity-added",
			Namespace: "dev", Change: "added", Path: "/dev/x-" + typ, Target: tgt, Time: now,
			File: &detectors.FileInfo{Type: typ, Mode: ptr(uint32(0o600))}}, ""))
	}
	for _, e := range goldenEvents() {
		evs = append(evs, e)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "alerts.jsonl")
	d, err := New(Config{Sinks: []SinkConfig{{Name: "f", Type: TypeFile, Path: out}}}, dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.EmitAll(evs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	d.Close(ctx)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	for i, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var e struct {
			Event struct{ Action string } `json:"event"`
		}
		json.Unmarshal(line, &e)
		got[fmt.Sprintf("%03d %s", i, e.Event.Action)] = line
	}
	if len(got) != len(evs) {
		t.Fatalf("%d events written, %d emitted", len(got), len(evs))
	}
	return got
}

// TestEventSchema validates real events against the shipped JSON Schema
// (schema/event.schema.json) with a JSON Schema validator, and checks that the
// shipped Elasticsearch index template (dynamic: strict) maps every field they carry
// with a type their values fit.
func TestEventSchema(t *testing.T) {
	sch := compileEventSchema(t)
	tb, err := os.ReadFile(filepath.Join("schema", "elasticsearch-index-template.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tmpl struct {
		Template struct {
			Mappings map[string]any `json:"mappings"`
		} `json:"template"`
	}
	if err := json.Unmarshal(tb, &tmpl); err != nil {
		t.Fatalf("index template: %v", err)
	}
	evs := realEvents(t)
	names := make([]string, 0, len(evs))
	for n := range evs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(evs[n]))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(v); err != nil {
			t.Errorf("%s does not validate: %v\n%s", n, err, evs[n])
		}
		var m map[string]any
		json.Unmarshal(evs[n], &m)
		checkMapped(t, n, "", m, tmpl.Template.Mappings)
	}
	// The schema refuses what it should: a wrong log.level, a non-ECS top-level field.
	bad := map[string]string{"log.level high": `"level":"error"`, "extra field": `"@timestamp"`}
	for what, field := range bad {
		var line []byte
		for _, n := range names {
			line = evs[n]
			break
		}
		switch what {
		case "log.level high":
			line = bytes.Replace(line, []byte(`"level":"`), []byte(`"level":"high","x":"`), 1)
		default:
			line = bytes.Replace(line, []byte(field), []byte(`"severity_name":1,"@timestamp"`), 1)
		}
		v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(line))
		if sch.Validate(v) == nil {
			t.Errorf("the schema accepts an event with %s", what)
		}
	}
	t.Logf("%d events validated", len(evs))
}

// checkMapped walks an event's fields and requires a mapping for each, of a type its
// value fits (a flattened field takes anything below it).
func checkMapped(t *testing.T, ev, path string, v any, mapping map[string]any) {
	t.Helper()
	typ, _ := mapping["type"].(string)
	switch x := v.(type) {
	case map[string]any:
		if typ == "flattened" {
			return
		}
		props, _ := mapping["properties"].(map[string]any)
		for k, sub := range x {
			p := k
			if path != "" {
				p = path + "." + k
			}
			m, ok := props[k].(map[string]any)
			if !ok {
				t.Errorf("%s: field %s is not mapped by the index template (dynamic: strict refuses the event)", ev, p)
				continue
			}
			checkMapped(t, ev, p, sub, m)
		}
	case []any:
		for _, e := range x {
			checkMapped(t, ev, path, e, mapping)
		}
	case string:
		switch typ {
		case "keyword", "match_only_text", "text", "flattened":
		case "date":
			if _, err := time.Parse(time.RFC3339Nano, x); err != nil {
				t.Errorf("%s: %s = %q is not a date", ev, path, x)
			}
		default:
			t.Errorf("%s: %s is a string, mapped as %q", ev, path, typ)
		}
	case float64:
		if typ != "long" && typ != "flattened" {
			t.Errorf("%s: %s is a number, mapped as %q", ev, path, typ)
		}
	case bool:
		if typ != "boolean" && typ != "flattened" {
			t.Errorf("%s: %s is a boolean, mapped as %q", ev, path, typ)
		}
	}
}
