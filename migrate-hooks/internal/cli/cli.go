// Package cli implements domainm-migrate's commands: migrate (the plain CLI over four
// QMP sockets and the supervisor's control socket) and libvirt-hook (libvirt's qemu
// hook). The published experiment is its own binary, domainm-migrate-bench, so that the
// coordinator shipped to hypervisor hosts links no lab.
//
// Exit codes, for scripts and libvirt:
//
//	0  done: the pair migrated (or, for the hook, the migration may go ahead)
//	1  failed, rolled back: target and Domain M run at the source, monitored
//	2  failed, the target is left paused (the error says where and why)
//	3  the target ran unwatched (invariant violated; the error says how long)
//	64 usage error
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"

	"github.com/domainm/domainm/internal/cmdline"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// Exit codes.
const (
	ExitOK         = 0
	ExitRolledBack = 1
	ExitPaused     = 2
	ExitUnwatched  = 3
	ExitUsage      = 64
)

// Env is what a command may touch of the outside world.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Alert receives the one error of a failed co-migration (a hook for paging); the
	// default logs it.
	Alert func(error)
}

type command struct {
	name, summary string
	// exits are the command's own exit codes, as its --help lists them (ExitUsage is
	// added to every list); examples are command lines that work as shown.
	exits    []exit
	examples []string
	run      func(ctx context.Context, env Env, args []string) int
}

// exit is one exit code of a command and what it means there.
type exit struct {
	code    int
	meaning string
}

// usageExit ends every command's exit codes.
var usageExit = exit{ExitUsage, "the command line cannot be parsed (unknown flag, malformed value, stray argument,\na required flag missing)"}

var commands = map[string]command{}

// modes are commands reached through a flag of another ("migrate --xen"), with their
// own options and help.
var modes = map[string]command{}

func register(c command) { commands[c.name] = c }

// Main runs the command in args; argv0 is the program's name: invoked as "qemu" (a
// symlink in libvirt's hooks folder) it is the libvirt hook.
func Main(ctx context.Context, env Env, argv0 string, args []string) int {
	if filepath.Base(argv0) == "qemu" {
		return commands["libvirt-hook"].run(ctx, env, args)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.Stdout)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	if args[0] == "--version" || args[0] == "-version" {
		printVersion(env.Stdout, Version(), false)
		return ExitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "domainm-migrate: unknown command %q (see domainm-migrate --help)\n", args[0])
		return ExitUsage
	}
	return c.run(ctx, env, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "domainm-migrate co-migrates a target VM and its Domain M so that the target never runs unwatched.")
	fmt.Fprintln(w, "\nUsage: domainm-migrate COMMAND [flags]   (COMMAND --help for its flags)\n       domainm-migrate --version\n\nCommands:")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nExit codes: 0 done, 1 failed and rolled back (pair monitored at the source),")
	fmt.Fprintln(w, "2 failed with the target left paused, 3 target ran unwatched, 64 usage.")
	fmt.Fprintln(w, "As a libvirt hook: ln -s $(command -v domainm-migrate) /etc/libvirt/hooks/qemu")
}

// newFlags returns a flag set whose --help prints to stdout the usage line, the
// description, the options, the command's own exit codes and its examples (from the
// commands table, or modes), and returns ExitOK.
func newFlags(env Env, name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	c, ok := commands[name]
	if !ok {
		c = modes[name]
	}
	fs.Usage = func() { printHelp(env.Stdout, fs, c, synopsis, description) }
	return fs
}

// printHelp prints a command's --help: Usage, the description, Options, Exit codes,
// Examples.
func printHelp(w io.Writer, fs *flag.FlagSet, c command, synopsis, description string) {
	fmt.Fprintf(w, "Usage: domainm-migrate %s\n\n%s\n\nOptions:\n", synopsis, strings.TrimSpace(description))
	printOptions(w, fs)
	if !hasFlags(fs) {
		fmt.Fprintln(w, "  none: the arguments are those of the Usage line")
	}
	fmt.Fprint(w, "\nExit codes:\n")
	for _, e := range append(append([]exit(nil), c.exits...), usageExit) {
		fmt.Fprintf(w, "  %-3d %s\n", e.code, strings.ReplaceAll(e.meaning, "\n", "\n      "))
	}
	fmt.Fprint(w, "\nExamples:\n")
	for _, ex := range c.examples {
		fmt.Fprintf(w, "  %s\n", ex)
	}
}

// parse parses args; ok false means return code. A mistake is one line on stderr
// naming the flag as --flag and pointing at --help, and ExitUsage (as in domainm).
func parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := cmdline.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
			return ExitOK, false
		}
		fmt.Fprintf(fs.Output(), "domainm-migrate %s: %s (see domainm-migrate %s --help)\n", fs.Name(), err, fs.Name())
		return ExitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "domainm-migrate %s: unexpected argument %q (see domainm-migrate %s --help)\n", fs.Name(), fs.Arg(0), fs.Name())
		return ExitUsage, false
	}
	return 0, true
}

// printOptions lists fs's flags as --flag VALUE, each with its text and default.
var printOptions = cmdline.PrintOptions

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// exitCode maps a co-migration's error to the exit code.
func exitCode(r *syncpoint.Result, err error) int {
	if err == nil {
		if r != nil {
			if gap, _ := r.Gap.Get(); gap > 0 || len(r.Violations) > 0 {
				return ExitUnwatched
			}
		}
		return ExitOK
	}
	if errors.Is(err, syncpoint.ErrUnwatched) {
		return ExitUnwatched
	}
	var se *syncpoint.Error
	if errors.As(err, &se) && r != nil && r.RolledBack {
		return ExitRolledBack
	}
	return ExitPaused
}

// ParseMode parses a mode's name (sync, paced, nosync).
func ParseMode(s string) (syncpoint.Mode, error) {
	for _, m := range []syncpoint.Mode{syncpoint.Sync, syncpoint.Paced, syncpoint.NoSync, syncpoint.Sequential} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q (sync, paced, nosync, sequential)", s)
}

func logger(env Env, verbose bool) *slog.Logger {
	lvl := slog.LevelWarn
	if verbose {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: lvl})).With("component", "domainm-migrate")
}

func alert(env Env, log *slog.Logger) func(error) {
	if env.Alert != nil {
		return env.Alert
	}
	return func(err error) { log.Error("ALERT co-migration failed", "err", err) }
}

// report prints a result: a summary, or with asJSON the whole result and timeline.
func report(w io.Writer, r *syncpoint.Result, err error, asJSON bool) {
	if asJSON {
		out := struct {
			*syncpoint.Result
			Error string `json:"error,omitempty"`
		}{Result: r}
		if err != nil {
			out.Error = err.Error()
		}
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		e.Encode(out)
		return
	}
	if r == nil {
		return
	}
	fmt.Fprintf(w, "mode %s: total %v; waits P1 %v P2 %v P3 %v P4 %v\n", r.Mode, ms(r.Total),
		ms(r.Waits[0]), ms(r.Waits[1]), ms(r.Waits[2]), ms(r.Waits[3]))
	fmt.Fprintf(w, "target downtime %v (sync wait %v); domain M downtime %v; P1 margin %v; monitoring gap %v\n",
		ms(r.TargetDowntime), ms(r.SyncWait), ms(r.DomMDowntime), ms(r.P1Margin), ms(r.Gap))
}

// ms writes a figure in milliseconds, or "n/a" where the migration did not measure it.
func ms(f syncpoint.Figure) string {
	if !f.OK() {
		return f.Ms()
	}
	return f.Ms() + "ms"
}
