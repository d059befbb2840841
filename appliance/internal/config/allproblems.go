package config

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/internal/units"
)

// keyAt names the key the TOML library reported as last (without array indexes, as
// "alerts.sink.min_severity") by its full path ("alerts.sink[0].min_severity"): the
// indexed key defined on that line.
func (p positions) keyAt(line int, key string) string {
	if line <= 0 {
		return key
	}
	for k, n := range p {
		if n == line && indexRE.ReplaceAllString(k, "") == key {
			return k
		}
	}
	return key
}

// lineOf is the line of a decoding error, 0 if it has none.
func lineOf(err error, path string, pos positions) int {
	return decodeError(path, pos, err).Line
}

// blankLine returns data with line n (1-based) emptied.
func blankLine(data []byte, n int) []byte {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if n < 1 || n > len(lines) {
		return data
	}
	out := make([]byte, 0, len(data))
	for i, l := range lines {
		if i == n-1 {
			if bytes.HasSuffix(l, []byte("\n")) {
				out = append(out, '\n')
			}
			continue
		}
		out = append(out, l...)
	}
	return out
}

// lookup returns the raw value of a full key path ("alerts.sink[0].timeout") in the
// file's generic decoding, or nil.
func lookup(raw map[string]any, key string) any {
	var cur any = raw
	for _, part := range strings.Split(key, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i > 0 && strings.HasSuffix(part, "]") {
			n, err := strconv.Atoi(part[i+1 : len(part)-1])
			if err != nil {
				return nil
			}
			name, idx = part[:i], n
		}
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[name]
		if idx >= 0 {
			arr, ok := cur.([]map[string]any)
			if !ok || idx >= len(arr) {
				return nil
			}
			cur = arr[idx]
		}
	}
	return cur
}

func isBareNumber(v any) bool {
	switch v := v.(type) {
	case int64, float64:
		return true
	case string:
		_, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return err == nil
	}
	return false
}

func needsUnit(v any) string {
	n := strings.TrimSpace(fmt.Sprint(v))
	shown := n
	if _, quoted := v.(string); quoted {
		shown = strconv.Quote(n)
	}
	return units.NeedsUnit(shown, n) // as on the command line
}

var durationType = reflect.TypeOf(time.Duration(0))

// unitlessDurations finds duration keys given as TOML numbers (30 rather than "30s"):
// the TOML library would take them as nanoseconds.
func unitlessDurations(file string, pos positions, raw map[string]any, t reflect.Type, prefix string) []*Error {
	var errs []*Error
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		v, ok := raw[name]
		if !ok {
			continue
		}
		switch {
		case f.Type == durationType:
			if _, num := v.(int64); num {
				errs = append(errs, &Error{File: file, Line: pos.line(key), Key: key, Msg: needsUnit(v)})
			} else if _, num := v.(float64); num {
				errs = append(errs, &Error{File: file, Line: pos.line(key), Key: key, Msg: needsUnit(v)})
			}
		case f.Type.Kind() == reflect.Struct:
			if m, ok := v.(map[string]any); ok {
				errs = append(errs, unitlessDurations(file, pos, m, f.Type, key)...)
			}
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			if arr, ok := v.([]map[string]any); ok {
				for j, m := range arr {
					errs = append(errs, unitlessDurations(file, pos, m, f.Type.Elem(), fmt.Sprintf("%s[%d]", key, j))...)
				}
			}
		}
	}
	return errs
}
