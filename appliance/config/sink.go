package config

import (
	"fmt"
	"reflect"

	"github.com/BurntSushi/toml"
)

// Sink is one [[sink]] table, kept undecoded so that the alert package, which defines
// what each kind of sink accepts, decodes it with Decode and reports problems with
// Errorf; both keep the file, line and key in messages.
type Sink struct {
	Index int // 0-based position among the [[sink]] tables
	md    *toml.MetaData
	prim  toml.Primitive
	file  string
	pos   positions
}

// Key is the sink's name in messages: "sink[0]", "sink[1]", ...
func (s Sink) Key() string { return fmt.Sprintf("sink[%d]", s.Index) }

// Decode decodes the table into v, a pointer to a struct whose fields carry toml tags.
// Keys that v does not define are errors, as in the rest of the file.
func (s Sink) Decode(v any) error {
	if s.md == nil {
		return fmt.Errorf("%s: sink table not read from a file", s.Key())
	}
	if err := s.md.PrimitiveDecode(s.prim, v); err != nil {
		e := decodeError(s.file, s.pos, err)
		if e.Key != "" && len(e.Key) > 4 && e.Key[:4] == "sink" {
			e.Key = s.Key() + e.Key[4:]
		}
		e.Line = s.pos.line(e.Key)
		return &Errors{List: []*Error{e}}
	}
	var m map[string]any
	if err := s.md.PrimitiveDecode(s.prim, &m); err != nil {
		return &Errors{List: []*Error{decodeError(s.file, s.pos, err)}}
	}
	var errs []*Error
	t := reflect.TypeOf(v)
	for _, k := range unknownKeys(s.Key()+".", m, t) {
		errs = append(errs, &Error{File: s.file, Line: s.pos.line(k), Key: k, Msg: "unknown key for this sink"})
	}
	if len(errs) > 0 {
		return &Errors{List: errs}
	}
	return nil
}

// Errorf makes an error about key (relative to the sink, e.g. "address"; "" for the
// whole table) that names the file and line.
func (s Sink) Errorf(key, format string, args ...any) error {
	k := s.Key()
	if key != "" {
		k += "." + key
	}
	return &Errors{List: []*Error{{File: s.file, Line: s.pos.line(k), Key: k, Msg: fmt.Sprintf(format, args...)}}}
}
