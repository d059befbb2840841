package alert

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
)

// schemaPaths lists the JSON field paths of t from its struct tags (the schema's one
// source): objects and arrays of objects as well as their leaves, which are marked.
func schemaPaths(t reflect.Type, prefix string, out map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		p := prefix + name
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		leaf := ft.Kind() != reflect.Struct || ft == reflect.TypeOf(time.Time{})
		out[p] = leaf
		if !leaf {
			schemaPaths(ft, p+".", out)
		}
	}
}

// documentedFields reads the field names of the README's "Event schema" table: the
// backticked names of its first column, "a.b.c/d" meaning a.b.c and a.b.d, "x[]" an array.
func documentedFields(t *testing.T) []string {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "### Event schema\n")
	if !ok {
		t.Fatal(`README.md has no "### Event schema" section`)
	}
	tick := regexp.MustCompile("`([^`]+)`")
	var out []string
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| `") {
			if len(out) > 0 {
				break // end of the table
			}
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		for _, m := range tick.FindAllStringSubmatch(first, -1) {
			parts := strings.Split(strings.TrimSuffix(m[1], "[]"), "/")
			out = append(out, parts[0])
			base := parts[0][:strings.LastIndexByte(parts[0], '.')+1]
			for _, p := range parts[1:] {
				out = append(out, base+p)
			}
		}
	}
	return out
}

// TestSchemaDocumented: the README's event schema table names every field of Event
// (its JSON struct tags are the schema), and only those.
func TestSchemaDocumented(t *testing.T) {
	paths := map[string]bool{}
	schemaPaths(reflect.TypeOf(Event{}), "", paths)
	documented := map[string]bool{}
	for _, d := range documentedFields(t) {
		documented[d] = true
		if _, ok := paths[d]; !ok {
			t.Errorf("README.md documents %s, which Event does not have", d)
		}
	}
	var missing []string
	for p, leaf := range paths {
		if !leaf {
			continue
		}
		covered := false
		for q := p; q != ""; {
			if documented[q] {
				covered = true
				break
			}
			i := strings.LastIndexByte(q, '.')
			if i < 0 {
				break
			}
			q = q[:i]
		}
		if !covered {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	for _, p := range missing {
		t.Errorf("README.md's event schema table does not document %s", p)
	}
}

// TestProcessMapped: a finding's process (typed, filled by guest semantics) becomes
// ECS process.*, and a finding without one has none.
func TestProcessMapped(t *testing.T) {
	f := detectors.Finding{Detector: "yara-memory", Rule: "R", Time: goldenTime, Target: goldenTarget,
		Process: &detectors.Process{PID: 4242, Name: "sshd"}}
	e := FromFinding(f, StateNew)
	if e.Process == nil || e.Process.PID != 4242 || e.Process.Name != "sshd" {
		t.Errorf("process = %+v, want pid 4242 name sshd", e.Process)
	}
	f.Process = nil
	if e := FromFinding(f, StateNew); e.Process != nil {
		t.Errorf("process = %+v without one in the finding", e.Process)
	}
}
