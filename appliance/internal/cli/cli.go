// Package cli implements domainm's commands. Each command lives in its own file and is
// listed in the commands table; Main maps a command's result to the exit code.
//
// Exit codes follow ClamAV's convention so that scripts can branch on them:
// 0 nothing found, 1 findings (or changes), 2 error.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"golang.org/x/term"
)

// Exit codes.
const (
	ExitClean    = 0 // nothing found
	ExitFindings = 1 // findings, changes
	ExitError    = 2 // bad input, failure
	// ExitUsage is a command line that cannot be parsed (unknown command or flag, a
	// malformed flag value, a stray argument): sysexits' EX_USAGE, the same in
	// domainm-migrate.
	ExitUsage = 64
)

// usageError is a command line that cannot be parsed: one line on stderr, ExitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// Env is what a command may touch of the outside world, so tests run commands in-process.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// isTerminal reports whether w is a terminal (progress bars only go to terminals).
func (e Env) isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// command is one domainm subcommand.
type command struct {
	name    string
	summary string
	// exits are the command's own exit codes, as its --help lists them (ExitUsage is
	// added to every list).
	exits []exit
	// examples are command lines that work as shown (their flags are the command's),
	// each printed under Examples: in --help.
	examples []string
	// run parses args and runs. It returns the exit code; an error is printed and means ExitError.
	run func(ctx context.Context, env Env, args []string) (int, error)
}

// exit is one exit code of a command and what it means there.
type exit struct {
	code    int
	meaning string
}

// commands is filled by each command's file.
var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

// Main runs the command named by args[0].
func Main(ctx context.Context, env Env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.Stdout)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitClean
	}
	if args[0] == "--version" || args[0] == "-version" {
		if err := printVersion(env.Stdout, Version(), false); err != nil {
			return ExitError
		}
		return ExitClean
	}
	name := args[0]
	// Two-word commands such as "rules check".
	if len(args) > 1 {
		if c, ok := commands[name+" "+args[1]]; ok {
			return runCommand(ctx, env, c, args[2:])
		}
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(env.Stderr, "domainm: unknown command %q (see domainm --help)\n", name)
		return ExitUsage
	}
	return runCommand(ctx, env, c, args[1:])
}

func runCommand(ctx context.Context, env Env, c command, args []string) int {
	code, err := c.run(ctx, env, args)
	if errors.Is(err, flag.ErrHelp) {
		return ExitClean
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(env.Stderr, "domainm %s: %v (see domainm %s --help)\n", c.name, err, c.name)
		return ExitUsage
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "domainm %s: %v\n", c.name, err)
		return ExitError
	}
	return code
}

func usage(w io.Writer) {
	fmt.Fprint(w, `domainm — Domain M, hypervisor-level intrusion detection

Usage: domainm COMMAND [options]   (domainm COMMAND --help for its options)
       domainm --version

Commands:
`)
	names := slices.Sorted(maps.Keys(commands))
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Exit codes: 0 nothing found, 1 findings or changes, 2 error, 64 usage (a command
line that cannot be parsed); each command's --help gives its own.
`)
}

// usageExit ends every command's exit codes.
var usageExit = exit{ExitUsage, "the command line cannot be parsed (unknown flag, malformed value, stray argument)"}

// newFlags makes a FlagSet whose --help prints the command's usage line, description,
// options, its own exit codes and its examples (from the commands table).
func newFlags(env Env, name, usageLine, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() { printHelp(fs.Output(), fs, commands[name], usageLine, description) }
	return fs
}

// printHelp prints a command's --help: Usage, the description, Options, Exit codes,
// Examples.
func printHelp(out io.Writer, fs *flag.FlagSet, c command, usageLine, description string) {
	fmt.Fprintf(out, "Usage: domainm %s\n\n%s\n\nOptions:\n", usageLine, strings.TrimSpace(description))
	printOptions(out, fs)
	fmt.Fprint(out, "\nExit codes:\n")
	for _, e := range append(slices.Clip(c.exits), usageExit) {
		fmt.Fprintf(out, "  %-3d %s\n", e.code, strings.ReplaceAll(e.meaning, "\n", "\n      "))
	}
	fmt.Fprint(out, "\nExamples:\n")
	for _, ex := range c.examples {
		fmt.Fprintf(out, "  %s\n", ex)
	}
}

// parse parses args; --help prints usage to stdout and returns flag.ErrHelp.
func parse(env Env, fs *flag.FlagSet, args []string) error {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			fs.SetOutput(env.Stdout)
			fs.Usage()
			return flag.ErrHelp
		}
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}
