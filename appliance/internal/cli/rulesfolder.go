package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/domainm/domainm/detectors/yara"
)

// rulesFolderArgs parses the command line of rules check and rules list: their flags
// and the one rules folder, before or after the flags.
func rulesFolderArgs(env Env, fs *flag.FlagSet, args []string) (string, error) {
	var dirs []string
	for len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		dirs, args = append(dirs, args[0]), args[1:]
	}
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			return "", parse(env, fs, []string{"--help"})
		}
	}
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	if dirs = append(dirs, fs.Args()...); len(dirs) != 1 {
		return "", &usageError{"want exactly one rules folder"}
	}
	return dirs[0], nil
}

// compileFolder compiles a rules folder as the daemon does and prints each error to w
// as FILE:LINE: error: .... With files that do not compile it returns the rules that
// load and the compile error (ce); when nothing loads, or the folder cannot be read, an
// error. A folder without rule files gives yara.ErrNoRules.
func compileFolder(dir string, w io.Writer) (r *yara.Rules, ce *yara.CompileError, err error) {
	r, err = yara.Compile(dir)
	switch {
	case errors.As(err, &ce):
		for _, e := range ce.Errors {
			fmt.Fprintf(w, "%s: error: %s\n", joinPath(dir, e.File, e.Line), e.Text)
		}
		if r == nil {
			return nil, ce, fmt.Errorf("%d error(s) in %s, nothing loads", len(ce.Errors), dir)
		}
		return r, ce, nil
	case err != nil:
		return nil, nil, err
	}
	return r, nil, nil
}
