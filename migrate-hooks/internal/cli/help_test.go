package cli

import (
	"bytes"
	"context"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
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
// stderr, nothing on stdout, and exits 64.
func TestCommandHelp(t *testing.T) {
	all := map[string]command{}
	maps.Copy(all, commands)
	maps.Copy(all, modes)
	names := slices.Sorted(maps.Keys(all))
	if !slices.Equal(names, []string{"libvirt-hook", "migrate", "migrate --xen", "version"}) {
		t.Fatalf("commands and modes: %q", names)
	}
	exitSections := map[string]string{}
	for _, name := range names {
		c := all[name]
		args := strings.Fields(name)
		code, out, errOut := runMigrateCLI(append(args, "--help")...)
		if code != ExitOK || errOut != "" {
			t.Errorf("%s --help: exit %d, stderr %q", name, code, errOut)
			continue
		}
		m := regexp.MustCompile(`(?s)^Usage: domainm-migrate ` + regexp.QuoteMeta(name) + `\b.*?\n\n(.+?)\n\nOptions:\n(.+?)\n\nExit codes:\n(.+?)\n\nExamples:\n(.+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("%s --help lacks a section (Usage, description, Options, Exit codes, Examples, in this order):\n%s", name, out)
			continue
		}
		desc, opts, exits, examples := m[1], m[2], m[3], m[4]
		if len(strings.Fields(desc)) < 8 {
			t.Errorf("%s: description too short: %q", name, desc)
		}
		flags := regexp.MustCompile(`(?m)^  --([a-z][a-z0-9-]*)`).FindAllStringSubmatch(opts, -1)
		if (len(flags) == 0 && !strings.HasPrefix(opts, "  none: ")) || regexp.MustCompile(`(?m)^  -[a-z]`).MatchString(opts) {
			t.Errorf("%s: options not listed as --flag:\n%s", name, opts)
		}
		known := map[string]bool{"help": true, "xen": name == "migrate --xen"}
		for _, f := range flags {
			known[f[1]] = true
		}
		if len(c.exits) == 0 || c.exits[0].code != ExitOK {
			t.Errorf("%s: the table gives no exit codes starting with 0: %v", name, c.exits)
		}
		for _, e := range append(slices.Clip(c.exits), usageExit) {
			first, _, _ := strings.Cut(e.meaning, "\n")
			if !regexp.MustCompile(`(?m)^  ` + strconv.Itoa(e.code) + ` +` + regexp.QuoteMeta(first) + `$`).MatchString(exits) {
				t.Errorf("%s: exit code %d (%q) not listed:\n%s", name, e.code, first, exits)
			}
		}
		if !strings.HasSuffix(exits, strings.ReplaceAll("  64  "+usageExit.meaning, "\n", "\n      ")) {
			t.Errorf("%s: 64 is not the last exit code:\n%s", name, exits)
		}
		if other, dup := exitSections[exits]; dup {
			t.Errorf("%s and %s have the same exit codes (a generic footer?):\n%s", name, other, exits)
		}
		exitSections[exits] = name
		if len(c.examples) == 0 {
			t.Errorf("%s: no example in the table", name)
		}
		runs := false
		for _, ex := range strings.Split(strings.TrimRight(examples, "\n"), "\n") {
			ex = strings.TrimPrefix(ex, "  ")
			if !strings.HasPrefix(ex, "domainm-migrate "+name+" ") && ex != "domainm-migrate "+name {
				continue
			}
			runs = true
			cmdline := regexp.MustCompile(`\s(\||2?>|<)`).Split(ex, 2)[0]
			for _, f := range regexp.MustCompile(`(?:^|\s)--([a-z][a-z0-9-]*)`).FindAllStringSubmatch(cmdline, -1) {
				if !known[f[1]] {
					t.Errorf("%s: example %q uses --%s, which is not among its options", name, ex, f[1])
				}
			}
		}
		if !runs {
			t.Errorf("%s: no example runs domainm-migrate %s:\n%s", name, name, examples)
		}

		code, out, errOut = runMigrateCLI(append(args, "--no-such-flag")...)
		want := "domainm-migrate " + name + ": unknown flag --no-such-flag (see domainm-migrate " + name + " --help)\n"
		if code != ExitUsage || out != "" || errOut != want {
			t.Errorf("%s --no-such-flag: exit %d, stdout %q, stderr %q; want 64 and %q", name, code, out, errOut, want)
		}
	}
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
