package cli

import (
	"maps"
	"slices"
	"testing"

	"github.com/domainm/domainm/internal/clitest"
)

// TestCommandHelp walks every command of the commands table (a command added without
// these fails it): its --help has a usage line, a description, its options as --flag,
// its own exit codes (from the table, 64 last, each command's list its own) and
// examples whose flags are the command's; an unknown flag prints one line pointing at
// --help on stderr, nothing on stdout, and exits 64. The checks are domainm-migrate's
// too (internal/clitest).
func TestCommandHelp(t *testing.T) {
	names := slices.Sorted(maps.Keys(commands))
	if len(names) < 12 {
		t.Fatalf("only %d commands registered: %q", len(names), names)
	}
	var cmds []clitest.Command
	for _, name := range names {
		cmds = append(cmds, helpCommand(commands[name]))
	}
	clitest.CheckHelp(t, "domainm", cmds, clitest.Exit{Code: usageExit.code, Meaning: usageExit.meaning}, func(args ...string) (int, string, string) {
		return diskCLI(t, args...)
	})
}

// helpCommand is c as internal/clitest checks it.
func helpCommand(c command) clitest.Command {
	hc := clitest.Command{Name: c.name, Examples: len(c.examples)}
	for _, e := range c.exits {
		hc.Exits = append(hc.Exits, clitest.Exit{Code: e.code, Meaning: e.meaning})
	}
	return hc
}
