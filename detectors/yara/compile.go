// Package yara is Domain M's YARA engine: it compiles a rules folder with libyara (through
// go-yara) and scans buffers, one Scanner per worker.
//
// This is the only package that imports go-yara (cgo); everything else talks to it
// through detectors.Match and small interfaces declared by the callers.
//
// MemoryRules implements memscan.RuleSet, the block scanner interface the memory scan
// driver declares, and MemoryFindings turns a pass's matches into findings; so this
// package imports memscan. That follows the layering appliance → detectors →
// memscan, diskscan: detectors may import memscan and diskscan, never appliance, and
// memscan and diskscan import no detector engine (detectors/layers_test.go checks it).
//
// # Rules folders
//
// Every *.yar and *.yara file under the folder (subfolders included, hidden files and
// folders skipped) is compiled into its own namespace: the file's path relative to the
// folder without its extension ("malware/emotet" for malware/emotet.yar). Files are
// compiled in lexical order.
//
// A file that another file of the folder includes (include "sub/common.yar"), directly
// or through another include, is not compiled on its own: its rules belong to the
// including file's namespace only, as with YARA's index files. Which files are included
// is read from their include directives before compiling (Rules.Included lists them).
//
// The external variables Loki and THOR define, filename, filepath, extension, filetype,
// md5 and owner, are defined for every rule set (empty strings in memory scans), so rules
// written for them compile unchanged.
//
// A file that does not compile does not stop the others: Compile leaves it out, loads
// the rest and returns the loaded Rules together with a *CompileError that names each
// broken file and line. An IDS should keep detecting with the rules that work while the
// broken file is fixed; callers alert on each error (the supervisor does) or refuse
// (domainm rules check exits 2).
//
// # Memory scans
//
// ScanMemory presents a window of guest memory to libyara as YARA presents a process's
// memory (yara -p): as a memory block at its guest-physical address, not as a file. See
// ScanMemory for what filesize, offsets and uint*(N) mean then, and WindowRules for the
// rules flagged at load time because their meaning depends on the window.
package yara

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	goyara "github.com/hillu/go-yara/v4"
)

// Externals are the external variables every rule set defines, with their defaults:
// those Loki defines (filename, filepath, extension, filetype, md5, owner; THOR's file
// scans use the same names), all strings.
var Externals = map[string]any{
	"filename":  "",
	"filepath":  "",
	"extension": "",
	"filetype":  "",
	"md5":       "",
	"owner":     "",
}

// RuleError is one compile error or warning, located by file and line.
type RuleError struct {
	File string // path as given (inside the rules folder)
	Line int
	Text string
}

func (e RuleError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Text)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Text)
}

// CompileError lists every error found in a rules folder. When Left is not empty, the
// rest of the folder was loaded and Compile returned it beside this error: Left names
// the files left out.
type CompileError struct {
	Dir    string
	Errors []RuleError
	Left   []string // files left out (relative to Dir); empty when nothing was loaded
}

func (e *CompileError) Error() string {
	var b strings.Builder
	if len(e.Left) > 0 {
		fmt.Fprintf(&b, "%d rule file(s) in %s do not compile and were left out, the rest is loaded (%d error", len(e.Left), e.Dir, len(e.Errors))
	} else {
		fmt.Fprintf(&b, "rules in %s do not compile (%d error", e.Dir, len(e.Errors))
	}
	if len(e.Errors) != 1 {
		b.WriteString("s")
	}
	b.WriteString(")")
	for _, re := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(re.Error())
	}
	return b.String()
}

// ErrNoRules is returned (wrapped) by Compile when the folder holds no rule file; the
// returned Rules is still valid and matches nothing.
var ErrNoRules = errors.New("no *.yar or *.yara files")

// Rules is a compiled, immutable rule set. It is safe for concurrent use; each goroutine
// scans with its own Scanner.
type Rules struct {
	dir      string // the folder as given to Compile
	rules    *goyara.Rules
	id       string
	files    []string
	included map[string][]string
	count    int
	warns    []RuleError
	window   []WindowRule
	windowNS map[[2]string]bool // the WindowRules by namespace and identifier, as matches name them
	// screen: no condition can read a window's bytes when no string matches in it,
	// except at the fixed addresses in roots (screenRoots), so MemoryScanner.Screen may
	// settle windows without matches. False unless Compile read every file's source.
	screen bool
	roots  []readRoot
	// shortcut: when no rule matches a whole run of windows, only the sensitive rules'
	// strings make a window be scanned alone (sensitiveRules).
	shortcut  bool
	sensitive map[string]bool // rule identifiers, any namespace
}

// readsIn reports whether a condition reads memory at a fixed address in [base, base+n).
func (r *Rules) readsIn(base, n uint64) bool {
	for _, rt := range r.roots {
		if rt.addr < base+n && base < rt.addr+rt.width {
			return true
		}
	}
	return false
}

// ID identifies the rule set's content: the same files with the same bytes give the same ID.
func (r *Rules) ID() string { return r.id }

// Files lists the files compiled on their own (each is a namespace), relative to the
// folder; files included by another and files left out because they do not compile are
// not among them.
func (r *Rules) Files() []string { return r.files }

// Included maps each file that another file of the folder includes (and that is
// therefore not compiled on its own) to the files that include it directly.
func (r *Rules) Included() map[string][]string { return r.included }

// WindowRules lists the loaded rules whose condition depends on the scan window in a
// memory scan (filesize, entrypoint, uint*(N) at a fixed offset, "at N", "in (N..M)",
// counts, offsets compared with numbers, file-format modules such as pe and elf), with
// file and line. They compile and run; in memory they follow YARA's process-memory
// semantics (see Scanner.ScanMemory), which differ from the file semantics their authors
// may have meant. Found by reading the source, so a rule in an included file is listed
// under the included file.
func (r *Rules) WindowRules() []WindowRule { return r.window }

// Count is the number of rules.
func (r *Rules) Count() int { return r.count }

// Warnings are the compiler's warnings, by file and line.
func (r *Rules) Warnings() []RuleError { return r.warns }

// ListFiles returns the rule files under dir, relative to dir, in lexical order.
func ListFiles(dir string) ([]string, error) {
	var files []string
	// A rules folder is often a symlink swapped by a deploy; WalkDir does not follow a
	// symlinked root, so resolve it first (names stay relative to it).
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("listing rules folder: %w", err)
	}
	dir = root
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if path != dir && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		ext := strings.ToLower(filepath.Ext(name))
		if (ext == ".yar" || ext == ".yara") && d.Type().IsRegular() {
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing rules folder: %w", err)
	}
	sort.Strings(files)
	return files, nil
}

// Namespace is the namespace of a rule file: its relative path without extension.
func Namespace(rel string) string {
	return filepath.ToSlash(strings.TrimSuffix(rel, filepath.Ext(rel)))
}

// Compile compiles the rule files under dir (see the package doc for namespaces and
// includes). Files that do not compile are left out and the rest is loaded: the result
// is then a usable *Rules together with a *CompileError whose Left names the files left
// out. When nothing can be loaded (or reading the folder failed) Rules is nil. A folder
// with no rule files gives an empty rule set and an error wrapping ErrNoRules.
func Compile(dir string) (*Rules, error) {
	files, err := ListFiles(dir)
	if err != nil {
		return nil, err
	}
	srcs := make(map[string][]byte, len(files))
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("reading rule file: %w", err)
		}
		srcs[f] = b
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
	}
	id := hex.EncodeToString(h.Sum(nil))[:16]
	top, included := roots(dir, files, srcs)
	r, errs := compileFiles(dir, top)
	var left []string
	if errs != nil {
		// libyara's compiler is unusable after its first error, and rule authors want
		// every error, not just the first: compile each file alone to find the broken
		// ones, then the rest together. Only a folder that failed pays for it.
		var broken []RuleError
		var good []string
		for _, f := range top {
			if e := checkFile(dir, f); len(e) > 0 {
				broken = append(broken, e...)
				left = append(left, f)
			} else {
				good = append(good, f)
			}
		}
		if len(broken) == 0 {
			return nil, &CompileError{Dir: dir, Errors: errs}
		}
		if r, errs = compileFiles(dir, good); errs != nil {
			return nil, &CompileError{Dir: dir, Errors: append(broken, errs...)}
		}
		errs = broken
		top = good
	}
	r.id = id
	r.dir = dir
	r.files = top
	r.included = included
	// A rule lands in the namespace of each root file that compiles it: its own file,
	// or the files that include it.
	namespaces := map[string][]string{}
	for _, f := range top {
		ns := Namespace(f)
		namespaces[f] = append(namespaces[f], ns)
		for _, inc := range reachable(dir, f, srcs) {
			namespaces[inc] = append(namespaces[inc], ns)
		}
	}
	r.windowNS = map[[2]string]bool{}
	for _, f := range files {
		if len(namespaces[f]) == 0 {
			continue
		}
		ws := windowRules(f, lex(srcs[f]))
		r.window = append(r.window, ws...)
		for _, w := range ws {
			for _, ns := range namespaces[f] {
				r.windowNS[[2]string{ns, w.Rule}] = true
			}
		}
	}
	r.screen, r.roots = screenable(dir, files, srcs)
	var conds []ruleCond
	for _, f := range files {
		conds = append(conds, conditions(lex(srcs[f]))...)
	}
	r.sensitive, r.shortcut = sensitiveRules(conds)
	if len(left) > 0 {
		return r, &CompileError{Dir: dir, Errors: errs, Left: left}
	}
	if len(files) == 0 {
		return r, fmt.Errorf("%s: %w", dir, ErrNoRules)
	}
	return r, nil
}

// screenable reports whether every file of the folder allows MemoryScanner.Screen
// (screenRoots) and includes only files of the folder, which were read too, and
// returns their fixed-address reads.
func screenable(dir string, files []string, srcs map[string][]byte) (bool, []readRoot) {
	var roots []readRoot
	for _, f := range files {
		toks := lex(srcs[f])
		for _, inc := range includes(toks) {
			p := inc
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, filepath.Dir(f), p)
			}
			rel, err := filepath.Rel(dir, p)
			if _, ok := srcs[rel]; err != nil || !ok {
				return false, nil
			}
		}
		rs, ok := screenRoots(toks)
		if !ok {
			return false, nil
		}
		for _, rt := range rs {
			if !slices.Contains(roots, rt) {
				roots = append(roots, rt)
			}
		}
	}
	return true, roots
}

// reachable lists the folder's files that f includes, directly or not.
func reachable(dir, f string, srcs map[string][]byte) []string {
	var out []string
	seen := map[string]bool{f: true}
	var walk func(string)
	walk = func(f string) {
		for _, inc := range includes(lex(srcs[f])) {
			p := inc
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, filepath.Dir(f), p)
			}
			rel, err := filepath.Rel(dir, p)
			if _, ok := srcs[rel]; err != nil || !ok || seen[rel] {
				continue
			}
			seen[rel] = true
			out = append(out, rel)
			walk(rel)
		}
	}
	walk(f)
	return out
}

// compileFiles compiles files (relative to dir) into one rule set, each into its
// namespace. It returns the compiler's errors when it fails.
func compileFiles(dir string, files []string) (*Rules, []RuleError) {
	c, err := newCompiler()
	if err != nil {
		return nil, []RuleError{{File: dir, Text: err.Error()}}
	}
	defer c.Destroy()
	for _, f := range files {
		if err := addFile(c, dir, f); err != nil {
			return nil, collect(dir, c, err, f)
		}
	}
	yr, err := c.GetRules()
	if err != nil {
		return nil, []RuleError{{File: dir, Text: "linking rules: " + err.Error()}}
	}
	r := &Rules{rules: yr, count: len(yr.GetRules())}
	for _, w := range c.Warnings {
		r.warns = append(r.warns, RuleError{File: relTo(dir, w.Filename), Line: w.Line, Text: w.Text})
	}
	return r, nil
}

func newCompiler() (*goyara.Compiler, error) {
	c, err := goyara.NewCompiler()
	if err != nil {
		return nil, fmt.Errorf("creating yara compiler: %w", err)
	}
	for k, v := range Externals {
		if err := c.DefineVariable(k, v); err != nil {
			c.Destroy()
			return nil, fmt.Errorf("defining external %s: %w", k, err)
		}
	}
	return c, nil
}

// addFile adds one rule file to c. libyara reads it by name so that its includes are
// found relative to it and its errors name it.
func addFile(c *goyara.Compiler, dir, rel string) error {
	f, err := os.Open(filepath.Join(dir, rel))
	if err != nil {
		return err
	}
	defer f.Close()
	return c.AddFile(f, Namespace(rel))
}

func checkFile(dir, rel string) []RuleError {
	c, err := newCompiler()
	if err != nil {
		return []RuleError{{File: rel, Text: err.Error()}}
	}
	defer c.Destroy()
	if err := addFile(c, dir, rel); err != nil {
		return collect(dir, c, err, rel)
	}
	return nil
}

// collect turns the compiler's messages into RuleErrors relative to dir.
func collect(dir string, c *goyara.Compiler, err error, rel string) []RuleError {
	var out []RuleError
	for _, m := range c.Errors {
		file := relTo(dir, m.Filename)
		if file == "" {
			file = rel
		}
		out = append(out, RuleError{File: file, Line: m.Line, Text: m.Text})
	}
	if len(out) == 0 {
		out = append(out, RuleError{File: rel, Text: err.Error()})
	}
	return out
}

func relTo(dir, path string) string {
	if path == "" {
		return ""
	}
	if r, err := filepath.Rel(dir, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}
