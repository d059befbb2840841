// Package yara is Domain M's YARA engine: it compiles a rules folder with libyara (through
// go-yara) and scans buffers, one Scanner per worker.
//
// This is the only package that imports go-yara (cgo); everything else talks to it
// through detectors.Match and small interfaces declared by the callers.
//
// # Rules folders
//
// Every *.yar and *.yara file under the folder (subfolders included, hidden files and
// folders skipped) is compiled into its own namespace: the file's path relative to the
// folder without its extension ("malware/emotet" for malware/emotet.yar). Files are
// compiled in lexical order. The external variables filename, filepath, extension and
// filetype are defined for every rule set (empty strings in memory scans), so rules written
// for Loki or THOR compile unchanged.
package yara

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	goyara "github.com/hillu/go-yara/v4"
)

// Externals are the external variables every rule set defines, with their defaults.
var Externals = map[string]any{
	"filename":  "",
	"filepath":  "",
	"extension": "",
	"filetype":  "",
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

// CompileError lists every error found in a rules folder.
type CompileError struct {
	Dir    string
	Errors []RuleError
}

func (e *CompileError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rules in %s do not compile (%d error", e.Dir, len(e.Errors))
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
	rules *goyara.Rules
	id    string
	files []string
	count int
	warns []RuleError
}

// ID identifies the rule set's content: the same files with the same bytes give the same ID.
func (r *Rules) ID() string { return r.id }

// Files lists the compiled files, relative to the folder.
func (r *Rules) Files() []string { return r.files }

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

// Compile compiles every rule file under dir. On failure it returns a *CompileError that
// names every failing file and line; a folder with no rule files gives an empty rule set
// and an error wrapping ErrNoRules.
func Compile(dir string) (*Rules, error) {
	files, err := ListFiles(dir)
	if err != nil {
		return nil, err
	}
	c, err := newCompiler()
	if err != nil {
		return nil, err
	}
	defer c.Destroy()
	h := sha256.New()
	for _, f := range files {
		if err := addFile(c, dir, f, h); err != nil {
			return nil, &CompileError{Dir: dir, Errors: everyError(dir, files, collect(dir, c, err, f))}
		}
	}
	yr, err := c.GetRules()
	if err != nil {
		return nil, fmt.Errorf("linking rules from %s: %w", dir, err)
	}
	r := &Rules{rules: yr, id: hex.EncodeToString(h.Sum(nil))[:16], files: files, count: len(yr.GetRules())}
	for _, w := range c.Warnings {
		r.warns = append(r.warns, RuleError{File: relTo(dir, w.Filename), Line: w.Line, Text: w.Text})
	}
	if len(files) == 0 {
		return r, fmt.Errorf("%s: %w", dir, ErrNoRules)
	}
	return r, nil
}

// everyError compiles each file alone to report every broken file: libyara's compiler
// is unusable after its first error, and rule authors want all of them, not just the
// first. Only a folder that failed pays for it. first is what the whole-folder compile
// reported, kept if no file fails on its own.
func everyError(dir string, files []string, first []RuleError) []RuleError {
	var errs []RuleError
	for _, f := range files {
		errs = append(errs, checkFile(dir, f)...)
	}
	if len(errs) == 0 {
		return first
	}
	return errs
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

// addFile adds one rule file to c, and its name and bytes to h when h is not nil.
func addFile(c *goyara.Compiler, dir, rel string, h hash.Hash) error {
	f, err := os.Open(filepath.Join(dir, rel))
	if err != nil {
		return err
	}
	defer f.Close()
	if h != nil {
		b, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(b))
		h.Write(b)
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	return c.AddFile(f, Namespace(rel))
}

func checkFile(dir, rel string) []RuleError {
	c, err := newCompiler()
	if err != nil {
		return []RuleError{{File: rel, Text: err.Error()}}
	}
	defer c.Destroy()
	if err := addFile(c, dir, rel, nil); err != nil {
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
