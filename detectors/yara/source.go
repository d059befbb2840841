package yara

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// This file reads rule source without compiling it: the include directives (to decide
// which files are compiled on their own) and each rule's condition (to flag rules whose
// meaning in a memory scan depends on the scan window). libyara does not expose its
// syntax tree, so a small lexer does it; it understands comments, text strings, regular
// expressions and hex strings well enough not to mistake their contents for code. It
// never fails: what it cannot read it skips, and libyara remains the judge of validity.

type tokKind int

const (
	tokIdent  tokKind = iota // identifiers and keywords, $a, #a, @a, !a, pe.is_pe
	tokNumber                // 0, 0x4d5a, 10KB
	tokText                  // "..." (value without quotes, escapes kept)
	tokRegexp                // /.../
	tokHex                   // { 4D 5A ?? } in a strings section
	tokPunct                 // ( ) { } [ ] : = , . and operators, one or two bytes
)

type token struct {
	kind tokKind
	text string
	line int
}

func isIdentByte(c byte) bool {
	return c == '_' || isLetter(c) || '0' <= c && c <= '9'
}

// lex splits src into tokens. Hex strings are recognised after "=" (the strings
// section), regular expressions after "=" and "matches".
func lex(src []byte) []token {
	var out []token
	line := 1
	prev := func() string {
		if len(out) == 0 {
			return ""
		}
		return out[len(out)-1].text
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '/' && i+1 < len(src) && src[i+1] == '/':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(src) && src[i+1] == '*':
			i += 2
			for i < len(src) && !(src[i] == '*' && i+1 < len(src) && src[i+1] == '/') {
				if src[i] == '\n' {
					line++
				}
				i++
			}
			i += 2
		case c == '"':
			start, l := i+1, line
			i++
			for i < len(src) && src[i] != '"' && src[i] != '\n' {
				if src[i] == '\\' {
					i++
				}
				i++
			}
			end := min(i, len(src))
			out = append(out, token{tokText, string(src[start:end]), l})
			i++
		case c == '/' && (prev() == "=" || prev() == "matches"):
			start, l := i+1, line
			i++
			for i < len(src) && src[i] != '/' && src[i] != '\n' {
				if src[i] == '\\' {
					i++
				}
				i++
			}
			end := min(i, len(src))
			i++
			for i < len(src) && ('a' <= src[i] && src[i] <= 'z') {
				i++ // flags: i, s
			}
			out = append(out, token{tokRegexp, string(src[start:end]), l})
		case c == '{' && prev() == "=":
			start, l := i+1, line
			for i < len(src) && src[i] != '}' {
				if src[i] == '\n' {
					line++
				}
				i++
			}
			out = append(out, token{tokHex, string(src[start:min(i, len(src))]), l})
			i++
		case '0' <= c && c <= '9':
			start := i
			for i < len(src) && ('0' <= src[i] && src[i] <= '9' || 'a' <= src[i] && src[i] <= 'z' || 'A' <= src[i] && src[i] <= 'Z' || src[i] == '.' && i+1 < len(src) && '0' <= src[i+1] && src[i+1] <= '9') {
				i++
			}
			out = append(out, token{tokNumber, string(src[start:i]), line})
		case c == '_' || isLetter(c) || strings.IndexByte("$#@", c) >= 0 ||
			c == '!' && i+1 < len(src) && (src[i+1] == '_' || isLetter(src[i+1])):
			start := i
			i++
			for i < len(src) && isIdentByte(src[i]) {
				i++
			}
			// Dotted module access (pe.number_of_sections) is one token.
			for i+1 < len(src) && src[i] == '.' && (isLetter(src[i+1]) || src[i+1] == '_') && src[start] != '$' && src[start] != '#' && src[start] != '@' && src[start] != '!' {
				i++
				for i < len(src) && isIdentByte(src[i]) {
					i++
				}
			}
			out = append(out, token{tokIdent, string(src[start:i]), line})
		default:
			n := 1
			if i+1 < len(src) {
				switch string(src[i : i+2]) {
				case "==", "!=", "<=", ">=", "<<", ">>", "..":
					n = 2
				}
			}
			out = append(out, token{tokPunct, string(src[i : i+n]), line})
			i += n
		}
	}
	return out
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// includes returns the files a rule file includes, as written.
func includes(toks []token) []string {
	var out []string
	for i := 0; i+1 < len(toks); i++ {
		if toks[i].kind == tokIdent && toks[i].text == "include" && toks[i+1].kind == tokText {
			out = append(out, toks[i+1].text)
		}
	}
	return out
}

// roots splits the files of a folder into the files compiled on their own (roots) and the
// files another file of the folder includes, directly or through another include. This
// is YARA's convention for a rule collection with an index file: an included file is
// compiled as part of its includer, into the includer's namespace, and not a second time
// under its own. Files that include each other in a cycle with no root above them stay
// roots, so that libyara reports the cycle. srcs holds each file's bytes.
func roots(dir string, files []string, srcs map[string][]byte) (root []string, includedBy map[string][]string) {
	inFolder := make(map[string]bool, len(files))
	for _, f := range files {
		inFolder[f] = true
	}
	edges := map[string][]string{}
	includedBy = map[string][]string{}
	for _, f := range files {
		for _, inc := range includes(lex(srcs[f])) {
			p := inc
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, filepath.Dir(f), p)
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil || !inFolder[rel] || rel == f {
				continue
			}
			edges[f] = append(edges[f], rel)
			includedBy[rel] = append(includedBy[rel], f)
		}
	}
	covered := map[string]bool{}
	var walk func(string)
	walk = func(f string) {
		for _, g := range edges[f] {
			if !covered[g] {
				covered[g] = true
				walk(g)
			}
		}
	}
	for _, f := range files {
		if len(includedBy[f]) == 0 {
			walk(f)
		}
	}
	for _, f := range files {
		if len(includedBy[f]) == 0 || !covered[f] {
			root = append(root, f)
		}
	}
	for _, v := range includedBy {
		sort.Strings(v)
	}
	return root, includedBy
}

// WindowRule is a rule whose condition means something else in a memory scan than in a
// file scan, because it refers to the file as a whole: its size, a position in it, a
// header at its start, or how often something occurs in it.
type WindowRule struct {
	File    string   `json:"file"` // rule file, relative to the rules folder
	Line    int      `json:"line"`
	Rule    string   `json:"rule"`
	Reasons []string `json:"reasons"` // e.g. "filesize", "uint16(0)", "#a", "pe"
}

func (w WindowRule) String() string {
	return fmt.Sprintf("%s:%d: rule %s depends on the scan window in memory: %s", w.File, w.Line, w.Rule, strings.Join(w.Reasons, ", "))
}

// fileModules are the modules that parse a file format from the start of the data.
var fileModules = map[string]bool{"pe": true, "elf": true, "dotnet": true, "macho": true, "dex": true, "magic": true}

// windowRules finds, in one file's tokens, the rules whose condition depends on the
// scan window (see WindowRule).
func windowRules(file string, toks []token) []WindowRule {
	var out []WindowRule
	for i := 0; i < len(toks); i++ {
		if toks[i].kind != tokIdent || toks[i].text != "rule" || i+1 >= len(toks) || toks[i+1].kind != tokIdent {
			continue
		}
		name, line := toks[i+1].text, toks[i].line
		// Find the body and its condition section.
		j := i + 2
		for j < len(toks) && toks[j].text != "{" {
			j++
		}
		depth, cond := 0, -1
		k := j
		for ; k < len(toks); k++ {
			t := toks[k]
			if t.kind == tokPunct && t.text == "{" {
				depth++
			} else if t.kind == tokPunct && t.text == "}" {
				depth--
				if depth == 0 {
					break
				}
			} else if depth == 1 && t.kind == tokIdent && t.text == "condition" && k+1 < len(toks) && toks[k+1].text == ":" {
				cond = k + 2
			}
		}
		if cond >= 0 && cond <= k {
			if rs := conditionReasons(toks[cond:k]); len(rs) > 0 {
				out = append(out, WindowRule{File: file, Line: line, Rule: name, Reasons: rs})
			}
		}
		i = k
	}
	return out
}

func conditionReasons(c []token) []string {
	seen := map[string]bool{}
	var out []string
	add := func(r string) {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for i, t := range c {
		next := func(n int) token {
			if i+n < len(c) {
				return c[i+n]
			}
			return token{}
		}
		switch {
		case t.kind != tokIdent:
		case t.text == "filesize":
			add("filesize")
		case t.text == "entrypoint":
			add("entrypoint")
		case isIntFunc(t.text) && next(1).text == "(" && next(2).kind == tokNumber:
			add(t.text + "(" + next(2).text + ")")
		case (t.text == "at") && next(1).kind == tokNumber:
			add("at " + next(1).text)
		case t.text == "in" && next(1).text == "(" && next(2).kind == tokNumber:
			add("in (" + next(2).text + "..)")
		case t.text[0] == '#':
			add("count " + t.text)
		case t.text[0] == '@' && comparedToNumber(c[i+1:]):
			add("offset " + t.text)
		default:
			if mod, _, ok := strings.Cut(t.text, "."); ok && fileModules[mod] {
				add(mod)
			}
		}
	}
	return out
}

// comparedToNumber reports whether c, the tokens after an offset (@a or @a[i]), compare
// it with a number: "@a[1] < 0x400" is about a position in the file.
func comparedToNumber(c []token) bool {
	i := 0
	if i < len(c) && c[i].text == "[" {
		for depth := 0; i < len(c); i++ {
			if c[i].text == "[" {
				depth++
			} else if c[i].text == "]" {
				if depth--; depth == 0 {
					i++
					break
				}
			}
		}
	}
	if i+1 >= len(c) {
		return false
	}
	switch c[i].text {
	case "<", "<=", ">", ">=", "==", "!=":
		return c[i+1].kind == tokNumber
	}
	return false
}

func isIntFunc(s string) bool {
	s = strings.TrimSuffix(s, "be")
	switch s {
	case "int8", "int16", "int32", "uint8", "uint16", "uint32":
		return true
	}
	return false
}
