package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// parseFlags parses args without the flag package's own output (its message and the
// whole usage on every mistake): a mistake is one usageError naming the flag as
// --flag, and runCommand points at --help.
func parseFlags(fs *flag.FlagSet, args []string) error {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	if err == nil || err == flag.ErrHelp {
		return err
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + strings.TrimPrefix(name, "-")
	} else if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		msg = "flag --" + strings.TrimPrefix(name, "-") + " needs a value"
	} else if strings.HasPrefix(msg, "invalid value ") {
		msg = strings.Replace(msg, "for flag -", "for flag --", 1)
	}
	return &usageError{msg}
}

// printOptions lists fs's flags as --flag VALUE, each with its text and default.
func printOptions(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, text := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		text = strings.ReplaceAll(text, "\n", "\n      ")
		if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "[]" {
			text += fmt.Sprintf(" (default %s)", d)
		}
		fmt.Fprintf(w, "      %s\n", text)
	})
}
