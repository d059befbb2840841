package cli

import (
	"flag"

	"github.com/domainm/domainm/internal/cmdline"
)

// parseFlags parses args without the flag package's own output: a mistake is one
// usageError naming the flag as --flag (internal/cmdline, as domainm-migrate), and
// runCommand points at --help.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := cmdline.Parse(fs, args)
	if err == nil || err == flag.ErrHelp {
		return err
	}
	return &usageError{err.Error()}
}

// printOptions lists fs's flags as --flag VALUE, each with its text and default.
var printOptions = cmdline.PrintOptions
