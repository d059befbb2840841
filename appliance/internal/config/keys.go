package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// positions maps a dotted key ("memory.interval", "sink[1].address") to the line that
// defines it. The TOML library does not expose key positions, so they are found by a
// line scanner that understands table headers, array-of-table headers and
// (dotted) keys; that is enough for messages, and a key it misses falls back to its
// table's line.
type positions map[string]int

func indexKeys(data []byte) positions {
	pos := positions{}
	counts := map[string]int{}
	prefix := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(stripComment(sc.Text()))
		switch {
		case line == "":
		case strings.HasPrefix(line, "[["):
			name := cleanKey(strings.TrimSuffix(strings.TrimPrefix(line, "[["), "]]"))
			prefix = fmt.Sprintf("%s[%d]", inArray(name, counts), counts[name])
			counts[name]++
			pos.set(prefix, n)
		case strings.HasPrefix(line, "["):
			prefix = inArray(cleanKey(strings.TrimSuffix(strings.TrimPrefix(line, "["), "]")), counts)
			pos.set(prefix, n)
		default:
			k, _, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			key := cleanKey(k)
			if prefix != "" {
				key = prefix + "." + key
			}
			pos.set(key, n)
		}
	}
	return pos
}

// inArray rewrites a table name below an array of tables ("sink.tls" after the third
// [[sink]]) to name the array element ("sink[2].tls").
func inArray(name string, counts map[string]int) string {
	for i := len(name); i > 0; i = strings.LastIndex(name[:i], ".") {
		if n := counts[name[:i]]; n > 0 && i < len(name) {
			return fmt.Sprintf("%s[%d]%s", name[:i], n-1, name[i:])
		}
	}
	return name
}

func (p positions) set(key string, line int) {
	if _, dup := p[key]; !dup {
		p[key] = line
	}
}

// line returns the line of key or, failing that, of its closest parent; 0 if none.
func (p positions) line(key string) int {
	for key != "" {
		if n, ok := p[key]; ok {
			return n
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

// occurrences returns the indexed keys ("alerts.sink[1].x") that match key as the TOML
// library names it ("alerts.sink.x"), in file order; key itself when none does.
func (p positions) occurrences(key string) []string {
	var out []string
	for k := range p {
		if k != key && indexRE.ReplaceAllString(k, "") == key {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return []string{key}
	}
	sort.Slice(out, func(i, j int) bool { return p[out[i]] < p[out[j]] })
	return out
}

// cleanKey normalises a (dotted, possibly quoted) key as written in the file.
func cleanKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

// stripComment removes a # comment that is not inside a string.
func stripComment(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == '\\' && quote == '"':
			i++
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
		case quote == 0 && c == '#':
			return s[:i]
		}
	}
	return s
}

var lineErr = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// decodeError turns the TOML library's error into an *Error with file, line and key.
func decodeError(file string, pos positions, err error) *Error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: file, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
	}
	if m := lineErr.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: n, Key: m[2], Msg: m[3]}
	}
	return &Error{File: file, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

// knownKeys lists the keys the table holding k accepts, for "unknown key" messages.
func knownKeys(k toml.Key) string {
	t := reflect.TypeOf(Config{})
	for _, part := range k[:len(k)-1] {
		f, ok := fieldByTag(t, part)
		if !ok {
			return "none (no such table)"
		}
		t = f.Type
		if t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return "none (not a table)"
		}
	}
	return strings.Join(tags(t), ", ")
}

// tags lists the toml names of a struct type's decoded fields, sorted.
func tags(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if tag == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}
