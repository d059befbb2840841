package integrity

import (
	"fmt"
	"path"
	"strings"
)

// pattern is a guest path pattern: an absolute path whose segments may be globs
// (path.Match syntax, so * never crosses a slash), or, in exclude lists only, a bare
// name pattern such as "*.pyc" that matches the last segment at any depth.
type pattern struct {
	raw  string
	segs []string // absolute patterns; "/" has none
	glob bool     // some segment has glob metacharacters
	base bool     // bare name pattern
}

func parsePattern(raw string, allowBase bool) (pattern, error) {
	p := pattern{raw: raw}
	if raw == "" {
		return p, fmt.Errorf("empty path pattern")
	}
	if !strings.HasPrefix(raw, "/") {
		if !allowBase || strings.Contains(raw, "/") {
			return p, fmt.Errorf("path pattern %q is not absolute", raw)
		}
		if _, err := path.Match(raw, ""); err != nil {
			return p, fmt.Errorf("path pattern %q: %w", raw, err)
		}
		p.base = true
		p.glob = hasMeta(raw)
		p.segs = []string{raw}
		return p, nil
	}
	clean := path.Clean(raw)
	if clean != "/" {
		p.segs = strings.Split(clean[1:], "/")
	}
	for _, s := range p.segs {
		if _, err := path.Match(s, ""); err != nil {
			return p, fmt.Errorf("path pattern %q: %w", raw, err)
		}
		if hasMeta(s) {
			p.glob = true
		}
	}
	return p, nil
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

func segMatch(pat, seg string, glob bool) bool {
	if !glob {
		return pat == seg
	}
	ok, _ := path.Match(pat, seg) // patterns were validated when parsed
	return ok
}

// splitPath splits an absolute guest path into segments ("/" has none).
func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// match reports whether the pattern selects the path (segments): the path itself, or,
// when recursive, anything below it. depth is the number of pattern segments, which
// ranks more specific selections above less specific ones.
func (p pattern) match(segs []string, recursive bool) (depth int, ok bool) {
	if p.base {
		for _, s := range segs {
			if segMatch(p.segs[0], s, p.glob) {
				return 1, true
			}
		}
		return 0, false
	}
	if len(segs) < len(p.segs) || (!recursive && len(segs) != len(p.segs)) {
		return 0, false
	}
	for i, ps := range p.segs {
		if !segMatch(ps, segs[i], p.glob) {
			return 0, false
		}
	}
	return len(p.segs), true
}

// mayMatchBelow reports whether the pattern can select something strictly below the
// directory dir, so the walk must descend into it.
func (p pattern) mayMatchBelow(dir []string, recursive bool) bool {
	if p.base {
		return true
	}
	n := min(len(dir), len(p.segs))
	for i := 0; i < n; i++ {
		if !segMatch(p.segs[i], dir[i], p.glob) {
			return false
		}
	}
	return len(dir) < len(p.segs) || recursive
}
