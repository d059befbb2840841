package cli

import (
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestCommandHelp walks every command of the commands table (a command added without
// these fails it): its --help has a usage line, a description, its options as --flag,
// its own exit codes (from the table, 64 last, each command's list its own) and
// examples whose flags are the command's; an unknown flag prints one line pointing at
// --help on stderr, nothing on stdout, and exits 64.
func TestCommandHelp(t *testing.T) {
	names := slices.Sorted(maps.Keys(commands))
	if len(names) < 12 {
		t.Fatalf("only %d commands registered: %q", len(names), names)
	}
	exitSections := map[string]string{}
	for _, name := range names {
		c := commands[name]
		args := strings.Fields(name)
		code, out, errOut := diskCLI(t, append(args, "--help")...)
		if code != ExitClean || errOut != "" {
			t.Errorf("%s --help: exit %d, stderr %q", name, code, errOut)
			continue
		}
		m := regexp.MustCompile(`(?s)^Usage: domainm ` + regexp.QuoteMeta(name) + `\b[^\n]*\n\n(.+?)\n\nOptions:\n(.+?)\n\nExit codes:\n(.+?)\n\nExamples:\n(.+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("%s --help lacks a section (Usage, description, Options, Exit codes, Examples, in this order):\n%s", name, out)
			continue
		}
		desc, opts, exits, examples := m[1], m[2], m[3], m[4]
		if len(strings.Fields(desc)) < 8 {
			t.Errorf("%s: description too short: %q", name, desc)
		}
		flags := regexp.MustCompile(`(?m)^  --([a-z][a-z0-9-]*)`).FindAllStringSubmatch(opts, -1)
		if len(flags) == 0 || regexp.MustCompile(`(?m)^  -[a-z]`).MatchString(opts) {
			t.Errorf("%s: options not listed as --flag:\n%s", name, opts)
		}
		known := map[string]bool{"help": true}
		for _, f := range flags {
			known[f[1]] = true
		}
		// Exit codes: the table's, each with its meaning, then 64.
		if len(c.exits) == 0 || c.exits[0].code != ExitClean {
			t.Errorf("%s: the table gives no exit codes starting with 0: %v", name, c.exits)
		}
		for _, e := range append(slices.Clip(c.exits), usageExit) {
			first, _, _ := strings.Cut(e.meaning, "\n")
			if !regexp.MustCompile(`(?m)^  ` + strconv.Itoa(e.code) + ` +` + regexp.QuoteMeta(first) + `$`).MatchString(exits) {
				t.Errorf("%s: exit code %d (%q) not listed:\n%s", name, e.code, first, exits)
			}
		}
		if !strings.HasSuffix(exits, "  64  "+usageExit.meaning) {
			t.Errorf("%s: 64 is not the last exit code:\n%s", name, exits)
		}
		if other, dup := exitSections[exits]; dup {
			t.Errorf("%s and %s have the same exit codes (a generic footer?):\n%s", name, other, exits)
		}
		exitSections[exits] = name
		// Examples: at least one runs this command; their flags are this command's.
		if len(c.examples) == 0 {
			t.Errorf("%s: no example in the table", name)
		}
		runs := false
		for _, ex := range strings.Split(strings.TrimRight(examples, "\n"), "\n") {
			ex = strings.TrimPrefix(ex, "  ")
			if !strings.HasPrefix(ex, "domainm "+name+" ") && ex != "domainm "+name {
				continue
			}
			runs = true
			cmdline := regexp.MustCompile(`\s(\||2?>)`).Split(ex, 2)[0]
			for _, f := range regexp.MustCompile(`(?:^|\s)--([a-z][a-z0-9-]*)`).FindAllStringSubmatch(cmdline, -1) {
				if !known[f[1]] {
					t.Errorf("%s: example %q uses --%s, which is not among its options", name, ex, f[1])
				}
			}
		}
		if !runs {
			t.Errorf("%s: no example runs domainm %s:\n%s", name, name, examples)
		}

		code, out, errOut = diskCLI(t, append(args, "--no-such-flag")...)
		want := "domainm " + name + ": unknown flag --no-such-flag (see domainm " + name + " --help)\n"
		if code != ExitUsage || out != "" || errOut != want {
			t.Errorf("%s --no-such-flag: exit %d, stdout %q, stderr %q; want 64 and %q", name, code, out, errOut, want)
		}
	}
}
