package integrity

import (
	"encoding/json"
	"maps"
	"slices"
	"unicode/utf8"
)

// Xattrs are a file's extended attributes by full name. In JSON they are a list sorted
// by name, and a name that is not UTF-8 is also kept byte for byte (name_raw), so that a
// baseline read back compares equal to the filesystem.
type Xattrs map[string][]byte

type xattrJSON struct {
	Name    string `json:"name"`
	NameRaw []byte `json:"name_raw,omitempty"`
	Value   []byte `json:"value"`
}

// MarshalJSON writes the list form.
func (x Xattrs) MarshalJSON() ([]byte, error) {
	names := slices.Sorted(maps.Keys(x))
	out := make([]xattrJSON, len(names))
	for i, k := range names {
		out[i] = xattrJSON{Name: k, Value: x[k]}
		if !utf8.ValidString(k) {
			out[i].NameRaw = []byte(k)
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads the list form.
func (x *Xattrs) UnmarshalJSON(b []byte) error {
	var in []xattrJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	m := make(Xattrs, len(in))
	for _, a := range in {
		name := a.Name
		if a.NameRaw != nil {
			name = string(a.NameRaw)
		}
		m[name] = a.Value
	}
	*x = m
	return nil
}
