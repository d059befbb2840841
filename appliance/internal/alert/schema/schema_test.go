package schema

import (
	"bytes"
	"os"
	"testing"
)

// TestCompile: the embedded schema is the file beside it, it compiles whole and by
// part, and an unknown part is an error naming it.
func TestCompile(t *testing.T) {
	b, err := os.ReadFile(Name)
	if err != nil || !bytes.Equal(b, Event) {
		t.Fatalf("embedded schema differs from %s: %v", Name, err)
	}
	whole, err := Compile("")
	if err != nil {
		t.Fatal(err)
	}
	if err := whole.Validate(map[string]any{}); err == nil {
		t.Error("an empty object validates as an event")
	}
	addr, err := Compile("/properties/domainm/properties/matches/items/properties/address")
	if err != nil {
		t.Fatal(err)
	}
	for v, ok := range map[string]bool{"0x1000": true, "4096": false, "0X1000": false} {
		if err := addr.Validate(v); (err == nil) != ok {
			t.Errorf("address %q: %v", v, err)
		}
	}
	ts, err := Compile("/properties/@timestamp")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Validate("yesterday"); err == nil {
		t.Error("formats are not asserted: @timestamp \"yesterday\" validates")
	}
	if _, err := Compile("/properties/no-such-field"); err == nil {
		t.Error("an unknown part compiles")
	}
}
