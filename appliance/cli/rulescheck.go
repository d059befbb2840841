package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/domainm/domainm/detectors/yara"
)

func init() {
	register(command{name: "rules check", summary: "compile a rules folder and report every error with file:line", run: runRulesCheck})
}

func runRulesCheck(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "rules check", "rules check DIR",
		`Compiles every *.yar and *.yara file under DIR (subfolders too; each file is its own
namespace, named by its path without extension; a file included by another is compiled
only as part of its includer) with the same libyara and external variables the appliance
uses, and prints:
  FILE:LINE: error: ...    a file that does not compile (the appliance leaves it out and
                           loads the rest, alerting on each error)
  FILE:LINE: warning: ...  libyara's warnings, such as a string that slows scanning down
  FILE:LINE: window: ...   a rule whose meaning in a memory scan depends on the scan
                           window: filesize (undefined in memory), a fixed offset or
                           uint16(N) (a guest-physical address in memory), counts (per
                           window), file-format modules (parse a header at a window start)
Exit 0 if every file compiles, 2 if any file does not.`)
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
		if r == nil {
			return ExitError, fmt.Errorf("%d error(s) in %s, nothing loads", len(ce.Errors), dir)
		}
	case errors.Is(err, yara.ErrNoRules):
		fmt.Fprintf(env.Stdout, "%s: no rule files (*.yar, *.yara)\n", dir)
		return ExitClean, nil
	case err != nil:
		return ExitError, err
	}
	printRuleNotes(env.Stdout, dir, r)
	if ce != nil {
		fmt.Fprintf(env.Stdout, "%s: %d rules in %d files load; %d file(s) left out\n", dir, r.Count(), len(r.Files()), len(ce.Left))
		return ExitError, fmt.Errorf("%d error(s) in %s", len(ce.Errors), dir)
	}
	fmt.Fprintf(env.Stdout, "%s: %d rules in %d files OK\n", dir, r.Count(), len(r.Files()))
	return ExitClean, nil
}

// printRuleNotes prints the compiler's warnings (slow strings among them) and the rules
// whose meaning depends on the memory scan window, each as FILE:LINE.
func printRuleNotes(w io.Writer, dir string, r *yara.Rules) {
	for _, x := range r.Warnings() {
		fmt.Fprintf(w, "%s: warning: %s\n", joinPath(dir, x.File, x.Line), x.Text)
	}
	for _, x := range r.WindowRules() {
		fmt.Fprintf(w, "%s: window: rule %s depends on the memory scan window: %s\n", joinPath(dir, x.File, x.Line), x.Rule, strings.Join(x.Reasons, ", "))
	}
	if n := len(r.WindowRules()); n > 0 {
		fmt.Fprintf(w, "%s: %d of %d rules depend on the memory scan window (see README, Writing rules for memory scans)\n", dir, n, r.Count())
	}
}

func joinPath(dir, file string, line int) string {
	p := dir + "/" + file
	if line > 0 {
		return fmt.Sprintf("%s:%d", p, line)
	}
	return p
}
