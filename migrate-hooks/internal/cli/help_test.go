package cli

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/domainm/domainm/internal/clitest"
)

func runMigrateCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}, "domainm-migrate", args)
	return code, out.String(), errb.String()
}

// TestCommandHelp walks every command of the commands table and every mode (migrate
// --xen): its --help has a usage line, a description, its options as --flag (or says
// there are none), its own exit codes (from the table, 64 last) and examples whose
// flags are the command's; an unknown flag prints one line pointing at --help on
// stderr, nothing on stdout, and exits 64. The checks are domainm's too
// (internal/clitest).
func TestCommandHelp(t *testing.T) {
	all := map[string]command{}
	maps.Copy(all, commands)
	maps.Copy(all, modes)
	names := slices.Sorted(maps.Keys(all))
	if !slices.Equal(names, []string{"libvirt-hook", "migrate", "migrate --xen", "version"}) {
		t.Fatalf("commands and modes: %q", names)
	}
	var cmds []clitest.Command
	for _, name := range names {
		c := all[name]
		hc := clitest.Command{Name: c.name, Examples: len(c.examples)}
		for _, e := range c.exits {
			hc.Exits = append(hc.Exits, clitest.Exit{Code: e.code, Meaning: e.meaning})
		}
		cmds = append(cmds, hc)
	}
	clitest.CheckHelp(t, "domainm-migrate", cmds, clitest.Exit{Code: usageExit.code, Meaning: usageExit.meaning}, runMigrateCLI)
}

// TestUnits: sizes and durations take units as in domainm (internal/units): a duration
// without one says it needs one, a malformed size is named, --target-ram and its older
// spelling --target-mib cannot both be given; each is one line and exit 64, before
// anything is contacted.
func TestUnits(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "--timeout", "30"}, `invalid value "30" for flag --timeout: needs a unit: 30 is a bare number; write a duration such as "30s", "30m" or "30h"`},
		{[]string{"migrate", "--handshake-timeout", "10"}, `for flag --handshake-timeout: needs a unit`},
		{[]string{"migrate", "--xen", "--timeout", "1800"}, `for flag --timeout: needs a unit`},
		{[]string{"migrate", "--link", "1.5GB"}, `invalid value "1.5GB" for flag --link: expected a size such as`},
		{[]string{"migrate", "--target-ram", "1 parsec"}, `for flag --target-ram: expected a size`},
		{[]string{"migrate", "--target-ram", "1GiB", "--target-mib", "1024"}, `give one of --target-ram and --target-mib`},
	} {
		code, out, errOut := runMigrateCLI(tc.args...)
		if code != ExitUsage || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "--help)") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 64 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
}
