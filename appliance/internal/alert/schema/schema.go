// Package schema holds the alert event's JSON Schema (event.schema.json) and the
// Elasticsearch index template that ship in this folder, and compiles the schema for the
// tests that check real output against it: the alert package's events, the command
// line's --json forms, the daemon's file sink. Only tests import it, so no binary links
// the validator.
package schema

import (
	"bytes"
	_ "embed"
	"fmt"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Event is event.schema.json.
//
//go:embed event.schema.json
var Event []byte

// Name is the event schema's resource name in a Compiler: a part of it compiles as
// Name + "#" + a JSON pointer.
const Name = "event.schema.json"

// NewCompiler returns a compiler that knows the event schema as Name and asserts formats
// (date-time and the like), so that what it compiles fails on a malformed value.
func NewCompiler() (*jsonschema.Compiler, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Event))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(Name, doc); err != nil {
		return nil, err
	}
	return c, nil
}

// Compile compiles the part of the event schema at the JSON pointer ptr ("" for the
// whole schema).
func Compile(ptr string) (*jsonschema.Schema, error) {
	c, err := NewCompiler()
	if err != nil {
		return nil, err
	}
	return Part(c, ptr)
}

// Part compiles the part at ptr of c's event schema.
func Part(c *jsonschema.Compiler, ptr string) (*jsonschema.Schema, error) {
	loc := Name
	if ptr != "" {
		loc += "#" + ptr
	}
	s, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", loc, err)
	}
	return s, nil
}
