package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Change is one key whose value differs between two configurations, with both values
// as the file would spell them.
type Change struct {
	Key      string // full key path: "memory.interval", "alerts.sink[1].address"
	Old, New string
}

func (c Change) String() string { return fmt.Sprintf("%s (%s -> %s)", c.Key, c.Old, c.New) }

// Diff lists the keys whose values differ between a and b, in file order (the order
// of the Config struct). An array of tables that grew or shrank is one change of the
// whole array ("alerts.sink"); otherwise its elements are compared key by key.
func Diff(a, b *Config) []Change {
	var out []Change
	diffValue(reflect.ValueOf(*a), reflect.ValueOf(*b), "", &out)
	return out
}

func diffValue(a, b reflect.Value, key string, out *[]Change) {
	switch {
	case a.Kind() == reflect.Struct && a.Type() != reflect.TypeOf(time.Time{}):
		t := a.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			k := name
			if key != "" {
				k = key + "." + name
			}
			diffValue(a.Field(i), b.Field(i), k, out)
		}
	case a.Kind() == reflect.Slice && a.Type().Elem().Kind() == reflect.Struct:
		if a.Len() != b.Len() {
			*out = append(*out, Change{Key: key, Old: fmt.Sprintf("%d tables", a.Len()), New: fmt.Sprintf("%d tables", b.Len())})
			return
		}
		for i := range a.Len() {
			diffValue(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", key, i), out)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, Change{Key: key, Old: valueText(a), New: valueText(b)})
		}
	}
}

// valueText spells a value as in the file: durations with their unit, strings quoted.
func valueText(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return fmt.Sprintf("%q", x.String())
	case string:
		return fmt.Sprintf("%q", x)
	case fmt.Stringer:
		return fmt.Sprintf("%q", x.String())
	}
	return fmt.Sprint(v.Interface())
}
