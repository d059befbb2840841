// Package cmdline holds what both of Domain M's command lines (domainm and
// domainm-migrate) do with the flag package the same way: parse without its own output,
// name a flag in a mistake as --flag, list the options as --flag, and stamp the
// binary's version. It imports only the standard library: domainm-migrate links it.
package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Parse parses args into fs without the flag package's own output (its message and
// the whole usage on every mistake). It returns flag.ErrHelp for --help, and for a
// mistake an error whose message names the flag as --flag: "unknown flag --x",
// "flag --x needs a value", `invalid value "y" for flag --x: ...`.
func Parse(fs *flag.FlagSet, args []string) error {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + strings.TrimPrefix(name, "-")
	} else if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		msg = "flag --" + strings.TrimPrefix(name, "-") + " needs a value"
	} else {
		msg = strings.Replace(msg, "for flag -", "for flag --", 1)
	}
	return errors.New(msg)
}

// PrintOptions lists fs's flags as --flag VALUE, each with its text (further lines
// indented under it) and its default unless that is empty, false, 0 or [].
func PrintOptions(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, text := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "[]" {
			text += fmt.Sprintf(" (default %s)", d)
		}
		fmt.Fprintf(w, "      %s\n", strings.ReplaceAll(text, "\n", "\n      "))
	})
}
