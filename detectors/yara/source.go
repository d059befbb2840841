package yara

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
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
		cond, ok, k := ruleCondition(toks, i)
		if ok {
			if rs := conditionReasons(cond); len(rs) > 0 {
				out = append(out, WindowRule{File: file, Line: line, Rule: name, Reasons: rs})
			}
		}
		i = k
	}
	return out
}

// ruleCondition finds the body of the rule whose "rule" keyword is at toks[i]: the
// tokens of its condition section (ok false when it has none) and the index of the
// body's closing brace (len(toks) when it is not closed).
func ruleCondition(toks []token, i int) (cond []token, ok bool, end int) {
	j := i + 2
	for j < len(toks) && toks[j].text != "{" {
		j++
	}
	depth, at := 0, -1
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
			at = k + 2
		}
	}
	if at >= 0 && at <= k {
		return toks[at:k], true, k
	}
	return nil, false, k
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

// readRoot is a read of guest memory at a fixed address in a rule condition, as
// uint32(0x3C): the only window whose conditions can read bytes there is the one
// holding it.
type readRoot struct {
	addr  uint64
	width uint64
}

// screenRoots decides, from one file's tokens, whether the conditions of its rules
// can depend on a window's bytes when no string matches in it (MemoryScanner.Screen),
// and returns the fixed addresses they read. ok is false when they can: the file
// imports a module (modules parse the window), uses entrypoint (found in the window's
// bytes), or reads memory at an address that is neither a number nor derived from a
// match offset (@a, @a[i], !a: undefined without matches), filesize (undefined in
// memory) or another read. A read whose address is derived that way is undefined in a
// window without matches unless the read it derives from is defined, so only windows
// holding a fixed address read (a root) can see bytes. When a construct is not
// understood, ok is false: the screen is an optimisation, never a reason to miss.
func screenRoots(toks []token) (roots []readRoot, ok bool) {
	for i, t := range toks {
		if t.kind != tokIdent {
			continue
		}
		switch {
		case t.text == "import" || t.text == "entrypoint":
			return nil, false
		case strings.Contains(t.text, ".") && strings.IndexByte("$#@!", t.text[0]) < 0:
			return nil, false // a module's field or function
		case isIntFunc(t.text):
			if i+1 >= len(toks) || toks[i+1].text != "(" {
				return nil, false
			}
			arg, ok := parenArg(toks[i+2:])
			if !ok {
				return nil, false
			}
			root, derived, ok := readAddress(arg)
			switch {
			case !ok:
				return nil, false
			case !derived:
				roots = append(roots, readRoot{addr: root, width: intWidth(t.text)})
			}
		}
	}
	return roots, true
}

// parenArg returns the tokens up to the parenthesis that closes an opened one.
func parenArg(toks []token) ([]token, bool) {
	depth := 1
	for j, t := range toks {
		switch {
		case t.kind != tokPunct:
		case t.text == "(":
			depth++
		case t.text == ")":
			if depth--; depth == 0 {
				return toks[:j], true
			}
		}
	}
	return nil, false
}

// readAddress classifies the address expression of a memory read: a single number
// (root), or an expression that is undefined without matches unless another read is
// defined (derived: it holds a match offset or length, filesize or another read, and
// otherwise only numbers and arithmetic). ok is false for anything else.
func readAddress(arg []token) (root uint64, derived, ok bool) {
	if len(arg) == 1 && arg[0].kind == tokNumber {
		v, ok := parseNumber(arg[0].text)
		return v, false, ok
	}
	for j := 0; j < len(arg); j++ {
		t := arg[j]
		switch {
		case t.kind == tokNumber:
		case t.kind == tokPunct && strings.Contains("+-*\\%&|^~<<>>()", t.text) && t.text != "<" && t.text != ">":
		case t.kind == tokIdent && (t.text[0] == '@' || t.text[0] == '!'):
			derived = true
			if j+1 < len(arg) && arg[j+1].text == "[" {
				// The index does not matter: an offset of a string with no match is
				// undefined whichever it is.
				inner, ok := bracketArg(arg[j+2:])
				if !ok {
					return 0, false, false
				}
				j += 2 + len(inner)
			}
		case t.kind == tokIdent && (t.text == "filesize" || isIntFunc(t.text)):
			derived = true
		default:
			return 0, false, false
		}
	}
	return 0, derived, derived
}

// bracketArg returns the tokens up to the bracket that closes an opened one.
func bracketArg(toks []token) ([]token, bool) {
	depth := 1
	for j, t := range toks {
		switch {
		case t.kind != tokPunct:
		case t.text == "[":
			depth++
		case t.text == "]":
			if depth--; depth == 0 {
				return toks[:j], true
			}
		}
	}
	return nil, false
}

// parseNumber reads a YARA integer: decimal, 0x hex or 0o octal, optionally with a KB
// or MB suffix.
func parseNumber(s string) (uint64, bool) {
	mul := uint64(1)
	switch {
	case strings.HasSuffix(s, "KB"):
		s, mul = s[:len(s)-2], 1<<10
	case strings.HasSuffix(s, "MB"):
		s, mul = s[:len(s)-2], 1<<20
	}
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil || v > ^uint64(0)/mul {
		return 0, false
	}
	return v * mul, true
}

// intWidth is the bytes a uint*/int* function reads.
func intWidth(f string) uint64 {
	f = strings.TrimSuffix(f, "be")
	switch {
	case strings.HasSuffix(f, "8"):
		return 1
	case strings.HasSuffix(f, "16"):
		return 2
	}
	return 4
}

// ruleCond is one rule's name, whether it is global, and its condition's tokens.
type ruleCond struct {
	name   string
	global bool
	cond   []token
}

// conditions returns the rules of one file's tokens with their conditions.
func conditions(toks []token) []ruleCond {
	var out []ruleCond
	for i := 0; i < len(toks); i++ {
		if toks[i].kind != tokIdent || toks[i].text != "rule" || i+1 >= len(toks) || toks[i+1].kind != tokIdent {
			continue
		}
		rc := ruleCond{name: toks[i+1].text}
		for j := i - 1; j >= 0 && j >= i-2; j-- {
			if toks[j].text == "global" {
				rc.global = true
			}
		}
		cond, _, k := ruleCondition(toks, i)
		rc.cond = cond
		out = append(out, rc)
		i = k
	}
	return out
}

// monotone reports whether a condition can only hold in a run of windows when it holds
// in one of them: it is made of string presence ($a), "N of" sets, "$a at N", "$a in
// (N..M)", counts compared with > or >=, memory reads compared with == (a window's
// read is defined in the run too, with the same bytes), filesize comparisons (always
// false in memory), and, or and references to other rules (refs, which must be
// monotone too). not, none, !=, <, offsets, lengths, loops and anything else make it
// non-monotone, as does a construct this reader does not know.
func monotone(c []token) (refs []string, ok bool) {
	for j := 0; j < len(c); j++ {
		t := c[j]
		next := func(n int) token {
			if j+n < len(c) {
				return c[j+n]
			}
			return token{kind: -1}
		}
		switch t.kind {
		case tokNumber:
		case tokPunct:
			switch t.text {
			case "(", ")", ",", "*", "..", "%":
			default:
				return nil, false
			}
		case tokIdent:
			switch {
			case t.text == "and" || t.text == "or" || t.text == "of" || t.text == "them" || t.text == "any" ||
				t.text == "all" || t.text == "at" || t.text == "in" || t.text == "true" || t.text == "false":
			case t.text[0] == '$':
			case t.text[0] == '#':
				if op := next(1).text; (op != ">" && op != ">=") || next(2).kind != tokNumber {
					return nil, false
				}
				j += 2
			case t.text == "filesize":
				switch next(1).text {
				case "<", "<=", ">", ">=", "==", "!=":
				default:
					return nil, false
				}
				if next(2).kind != tokNumber {
					return nil, false
				}
				j += 2
			case isIntFunc(t.text):
				if next(1).text != "(" {
					return nil, false
				}
				arg, ok := parenArg(c[j+2:])
				if !ok || !constantRead(arg) {
					return nil, false
				}
				j += 2 + len(arg) // at the closing parenthesis
				if next(1).text == "&" && next(2).kind == tokNumber {
					j += 2
				}
				if next(1).text != "==" || next(2).kind != tokNumber {
					return nil, false
				}
				j += 2
			case isIdentStart(t.text[0]) && !strings.Contains(t.text, ".") && !yaraKeyword[t.text]:
				refs = append(refs, t.text)
			default:
				return nil, false
			}
		default:
			return nil, false
		}
	}
	return refs, true
}

// constantRead reports whether a read's address is made only of numbers, arithmetic
// and other reads: the same in a window and in a run of windows.
func constantRead(arg []token) bool {
	for _, t := range arg {
		switch {
		case t.kind == tokNumber:
		case t.kind == tokPunct && strings.Contains("+-*\\%&|^~<<>>()", t.text) && t.text != "<" && t.text != ">":
		case t.kind == tokIdent && isIntFunc(t.text):
		default:
			return false
		}
	}
	return len(arg) > 0
}

func isIdentStart(c byte) bool { return c == '_' || isLetter(c) }

// yaraKeyword are YARA's reserved words that are not rule names.
var yaraKeyword = map[string]bool{
	"all": true, "and": true, "any": true, "ascii": true, "at": true, "base64": true, "base64wide": true,
	"condition": true, "contains": true, "endswith": true, "entrypoint": true, "false": true, "filesize": true,
	"for": true, "fullword": true, "global": true, "import": true, "icontains": true, "iendswith": true,
	"iequals": true, "in": true, "include": true, "int16": true, "int16be": true, "int32": true, "int32be": true,
	"int8": true, "int8be": true, "istartswith": true, "matches": true, "meta": true, "nocase": true, "none": true,
	"not": true, "of": true, "or": true, "private": true, "rule": true, "startswith": true, "strings": true,
	"them": true, "true": true, "uint16": true, "uint16be": true, "uint32": true, "uint32be": true, "uint8": true,
	"uint8be": true, "wide": true, "xor": true, "defined": true,
}

// sensitiveRules splits a folder's rules (by name, across namespaces) for
// MemoryScanner.Screen: ok reports that the run's conditions may stand for its windows'
// (no global rule is non-monotone); sensitive names the rules whose result in a window
// can differ from the run's (non-monotone, global, or a rule such a rule refers to),
// whose string matches always make a window be scanned alone.
func sensitiveRules(rules []ruleCond) (sensitive map[string]bool, ok bool) {
	byName := map[string][]ruleCond{}
	for _, r := range rules {
		byName[r.name] = append(byName[r.name], r)
	}
	// A rule is monotone when its condition is and every rule it refers to is.
	state := map[string]int{} // 0 unknown, 1 in progress, 2 monotone, 3 not
	var mono func(name string) bool
	mono = func(name string) bool {
		switch state[name] {
		case 1, 3:
			return false // a cycle, or not monotone
		case 2:
			return true
		}
		state[name] = 1
		rs, ok := byName[name]
		good := ok
		for _, r := range rs {
			refs, m := monotone(r.cond)
			good = good && m
			for _, ref := range refs {
				good = good && mono(ref)
			}
		}
		state[name] = 3
		if good {
			state[name] = 2
		}
		return good
	}
	sensitive = map[string]bool{}
	var mark func(name string)
	mark = func(name string) {
		if _, isRule := byName[name]; sensitive[name] || !isRule {
			return
		}
		sensitive[name] = true
		for _, r := range byName[name] {
			refs, _ := monotone(r.cond)
			for _, ref := range refs {
				mark(ref)
			}
			// What monotone did not read as a reference may still be one: any
			// identifier of the condition that names a rule.
			for _, t := range r.cond {
				if _, isRule := byName[t.text]; isRule && t.kind == tokIdent {
					mark(t.text)
				}
			}
		}
	}
	ok = true
	for _, r := range rules {
		switch {
		case !mono(r.name):
			mark(r.name)
			ok = ok && !r.global
		case r.global:
			// A global rule decides for every rule of its namespace, sensitive ones too.
			mark(r.name)
		}
	}
	return sensitive, ok
}
