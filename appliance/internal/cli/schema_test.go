package cli

import (
	"bufio"
	"bytes"
	"os"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/domainm/domainm/appliance/internal/alert/schema"
)

// checkEventsSchema validates every alert the daemon wrote to the file sink at path
// against the shipped JSON Schema (appliance/internal/alert/schema/event.schema.json).
func checkEventsSchema(t *testing.T, path string) {
	t.Helper()
	sch, err := schema.Compile("")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(sc.Bytes()))
		if err == nil {
			err = sch.Validate(v)
		}
		if err != nil {
			t.Errorf("alert %d of %s does not validate against the event schema: %v\n%s", n+1, path, err, sc.Bytes())
		}
		n++
	}
	if n == 0 {
		t.Errorf("%s holds no alerts", path)
	}
	t.Logf("%d alerts of the daemon validated against the event schema", n)
}
