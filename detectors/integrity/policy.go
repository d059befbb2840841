package integrity

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// PolicyVersion is the policy format this package reads.
const PolicyVersion = 1

// Policy says which guest paths are watched and how. It is immutable once parsed and
// safe for concurrent use.
type Policy struct {
	File       string // where it was read from, for messages
	Source     []byte // the TOML text, stored in every baseline made with it
	Hash       string // sha256 of Source, hex
	Selections []*Selection
	Exclude    []pattern // excluded from every selection (not from the setuid sweep)
	Setuid     SetuidSweep
}

// Selection is one [[select]] table: paths and the attributes watched under them.
type Selection struct {
	Name          string
	Paths         []pattern
	Attrs         AttrSet
	Recursive     bool // default true
	TrustMetadata bool // skip re-hashing when type, size, mtime, ctime and inode are unchanged
	Growing       bool // logs: size may only grow, the old content must be a prefix of the new
	Exclude       []pattern
	index         int
}

// SetuidSweep records every setuid or setgid regular file in the whole filesystem
// that no selection covers, so a new one anywhere is reported.
type SetuidSweep struct {
	Enabled bool
	Attrs   AttrSet
	Exclude []pattern
}

// SetuidRule is the Record.Rule of entries found by the setuid sweep.
const SetuidRule = "setuid"

// PolicyError is a policy problem at a place in the policy file.
type PolicyError struct {
	File string
	Line int // 0 when unknown
	Msg  string
}

func (e *PolicyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

type rawPolicy struct {
	Version int                 `toml:"version"`
	Exclude []string            `toml:"exclude"`
	Groups  map[string][]string `toml:"groups"`
	Select  []rawSelection      `toml:"select"`
	Setuid  *rawSetuid          `toml:"setuid"`
}

type rawSelection struct {
	Name          string   `toml:"name"`
	Paths         []string `toml:"paths"`
	Attrs         []string `toml:"attrs"`
	Recursive     *bool    `toml:"recursive"`
	TrustMetadata bool     `toml:"trust_metadata"`
	Growing       bool     `toml:"growing"`
	Exclude       []string `toml:"exclude"`
}

type rawSetuid struct {
	Enabled *bool    `toml:"enabled"`
	Attrs   []string `toml:"attrs"`
	Exclude []string `toml:"exclude"`
}

// builtinGroups can be used in any policy and cannot be redefined.
var builtinGroups = map[string][]string{
	"perms":   {"type", "mode", "uid", "gid"},
	"meta":    {"perms", "inode", "nlink", "link", "caps"},
	"content": {"meta", "size", "mtime", "ctime", "sha256"},
}

// LoadPolicy reads and parses a policy file.
func LoadPolicy(file string) (*Policy, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	return ParsePolicy(file, b)
}

// ParsePolicy parses policy TOML. Unknown keys, unknown attributes and bad patterns
// are errors (*PolicyError) that name the file and line.
func ParsePolicy(file string, src []byte) (*Policy, error) {
	var raw rawPolicy
	md, err := toml.Decode(string(src), &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &PolicyError{File: file, Line: pe.Position.Line, Msg: pe.Message}
		}
		return nil, decodeError(file, err)
	}
	lines := indexKeyLines(src)
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return nil, &PolicyError{File: file, Line: lines.find(k), Msg: fmt.Sprintf("unknown key %q", k.String())}
	}
	sum := sha256.Sum256(src)
	p := &Policy{File: file, Source: append([]byte(nil), src...), Hash: hex.EncodeToString(sum[:])}
	b := policyBuilder{file: file, lines: lines, groups: raw.Groups}
	if raw.Version != PolicyVersion {
		return nil, b.errAt([]string{"version"}, "version must be %d (got %d)", PolicyVersion, raw.Version)
	}
	if err := b.checkGroups(); err != nil {
		return nil, err
	}
	if p.Exclude, err = b.patterns([]string{"exclude"}, raw.Exclude, true); err != nil {
		return nil, err
	}
	for i, rs := range raw.Select {
		s, err := b.selection(i, rs)
		if err != nil {
			return nil, err
		}
		p.Selections = append(p.Selections, s)
	}
	if raw.Setuid != nil {
		if p.Setuid, err = b.setuid(*raw.Setuid); err != nil {
			return nil, err
		}
	}
	return p, nil
}

var reTOMLLine = regexp.MustCompile(`^toml: line (\d+) (.*)$`)

// decodeError turns the TOML library's "toml: line N (...): msg" into a PolicyError.
func decodeError(file string, err error) error {
	if m := reTOMLLine.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return &PolicyError{File: file, Line: n, Msg: m[2]}
	}
	return &PolicyError{File: file, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

type policyBuilder struct {
	file   string
	lines  keyLines
	groups map[string][]string
}

func (b *policyBuilder) errAt(key []string, format string, args ...any) error {
	return &PolicyError{File: b.file, Line: b.lines.at(key), Msg: fmt.Sprintf(format, args...)}
}

func (b *policyBuilder) checkGroups() error {
	for name := range b.groups {
		if _, ok := builtinGroups[name]; ok {
			return b.errAt([]string{"groups", name}, "group %q is built in and cannot be redefined", name)
		}
		if _, ok := attrByName(name); ok {
			return b.errAt([]string{"groups", name}, "group %q has the name of an attribute", name)
		}
		if _, err := b.expand(name, nil); err != nil {
			return b.errAt([]string{"groups", name}, "group %q: %v", name, err)
		}
	}
	return nil
}

// expand resolves an attribute or group name; seen detects cycles.
func (b *policyBuilder) expand(name string, seen []string) (AttrSet, error) {
	if a, ok := attrByName(name); ok {
		return AttrSet(a), nil
	}
	members, ok := builtinGroups[name]
	if !ok {
		members, ok = b.groups[name]
	}
	if !ok {
		return 0, fmt.Errorf("unknown attribute or group %q", name)
	}
	for _, s := range seen {
		if s == name {
			return 0, fmt.Errorf("group cycle %s -> %s", strings.Join(seen, " -> "), name)
		}
	}
	var out AttrSet
	for _, m := range members {
		s, err := b.expand(m, append(seen, name))
		if err != nil {
			return 0, err
		}
		out |= s
	}
	return out, nil
}

func (b *policyBuilder) attrs(key []string, names []string) (AttrSet, error) {
	if len(names) == 0 {
		return 0, b.errAt(key, "attrs is empty")
	}
	var out AttrSet
	for _, n := range names {
		s, err := b.expand(n, nil)
		if err != nil {
			return 0, b.errAt(key, "%v", err)
		}
		out |= s
	}
	return out, nil
}

func (b *policyBuilder) patterns(key []string, raws []string, allowBase bool) ([]pattern, error) {
	out := make([]pattern, 0, len(raws))
	for _, r := range raws {
		p, err := parsePattern(r, allowBase)
		if err != nil {
			return nil, b.errAt(key, "%v", err)
		}
		out = append(out, p)
	}
	return out, nil
}

func (b *policyBuilder) selection(i int, rs rawSelection) (*Selection, error) {
	key := func(k string) []string { return []string{fmt.Sprintf("select#%d", i), k} }
	s := &Selection{Name: rs.Name, Recursive: true, TrustMetadata: rs.TrustMetadata, Growing: rs.Growing, index: i}
	if s.Name == "" {
		s.Name = fmt.Sprintf("select #%d", i+1)
	}
	if rs.Recursive != nil {
		s.Recursive = *rs.Recursive
	}
	if len(rs.Paths) == 0 {
		return nil, b.errAt([]string{fmt.Sprintf("select#%d", i)}, "selection %q has no paths", s.Name)
	}
	var err error
	if s.Paths, err = b.patterns(key("paths"), rs.Paths, false); err != nil {
		return nil, err
	}
	if rs.Attrs == nil {
		return nil, b.errAt([]string{fmt.Sprintf("select#%d", i)}, "selection %q has no attrs", s.Name)
	}
	if s.Attrs, err = b.attrs(key("attrs"), rs.Attrs); err != nil {
		return nil, err
	}
	if s.Exclude, err = b.patterns(key("exclude"), rs.Exclude, true); err != nil {
		return nil, err
	}
	return s, nil
}

func (b *policyBuilder) setuid(rs rawSetuid) (SetuidSweep, error) {
	s := SetuidSweep{Enabled: true}
	if rs.Enabled != nil {
		s.Enabled = *rs.Enabled
	}
	names := rs.Attrs
	if names == nil {
		names = []string{"content"}
	}
	var err error
	if s.Attrs, err = b.attrs([]string{"setuid", "attrs"}, names); err != nil {
		return s, err
	}
	s.Exclude, err = b.patterns([]string{"setuid", "exclude"}, rs.Exclude, true)
	return s, err
}
