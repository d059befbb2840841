package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/domainm/domainm/detectors/yara"
)

func init() {
	register(command{name: "rules check", summary: "compile a rules folder and report every error with file:line", run: runRulesCheck})
}

func runRulesCheck(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "rules check", "rules check DIR",
		`Compiles every *.yar and *.yara file under DIR (subfolders too; each file is its own
namespace, named by its path without extension) with the same libyara the appliance uses,
and prints every error and warning as FILE:LINE: message. Exit 0 if the folder compiles,
2 if any file does not.`)
	var dirArgs []string
	for len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		dirArgs = append(dirArgs, args[0])
		args = args[1:]
	}
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	dirArgs = append(dirArgs, fs.Args()...)
	if len(dirArgs) != 1 {
		return ExitError, errors.New("want exactly one rules folder (see --help)")
	}
	dir := dirArgs[0]
	r, err := yara.Compile(dir)
	var ce *yara.CompileError
	switch {
	case errors.As(err, &ce):
		for _, e := range ce.Errors {
			fmt.Fprintf(env.Stdout, "%s: error: %s\n", joinPath(dir, e.File, e.Line), e.Text)
		}
		return ExitError, fmt.Errorf("%d error(s) in %s", len(ce.Errors), dir)
	case errors.Is(err, yara.ErrNoRules):
		fmt.Fprintf(env.Stdout, "%s: no rule files (*.yar, *.yara)\n", dir)
		return ExitClean, nil
	case err != nil:
		return ExitError, err
	}
	for _, w := range r.Warnings() {
		fmt.Fprintf(env.Stdout, "%s: warning: %s\n", joinPath(dir, w.File, w.Line), w.Text)
	}
	fmt.Fprintf(env.Stdout, "%s: %d rules in %d files OK\n", dir, r.Count(), len(r.Files()))
	return ExitClean, nil
}

func joinPath(dir, file string, line int) string {
	p := dir + "/" + file
	if line > 0 {
		return fmt.Sprintf("%s:%d", p, line)
	}
	return p
}
