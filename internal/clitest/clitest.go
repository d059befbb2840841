// Package clitest checks the command-line conventions that both of Domain M's binaries
// (domainm and domainm-migrate) promise, so that the two cannot drift apart: every
// command's --help has a usage line, a description, its options as --flag, its own exit
// codes (the command table's, the usage code last) and examples that run the command
// with its own flags; an unknown flag is one line on stderr pointing at --help, and the
// usage exit code.
//
// It is test support (imported by the two cli packages' tests only) and imports only
// the standard library and testing.
package clitest

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Exit is one exit code of a command and what it means there, as its --help lists it.
type Exit struct {
	Code    int
	Meaning string
}

// Command is one command (or mode) as the binary's command table gives it.
type Command struct {
	// Name is what follows the program's name: "status", "rules check", "migrate --xen"
	// (a flag in the name counts among the command's options).
	Name     string
	Exits    []Exit // the table's exit codes, 0 first; the usage code is added by the binary
	Examples int    // how many examples the table gives
}

// Run runs the binary in-process with args and returns its exit code and output.
type Run func(args ...string) (code int, stdout, stderr string)

var (
	flagLine    = regexp.MustCompile(`(?m)^  --([a-z][a-z0-9-]*)`)
	shortFlag   = regexp.MustCompile(`(?m)^  -[a-z]`)
	exampleFlag = regexp.MustCompile(`(?:^|\s)--([a-z][a-z0-9-]*)`)
	redirection = regexp.MustCompile(`\s(\||2?>|<)`) // the command line ends at a pipe or redirection
)

// CheckHelp runs prog's cmds with --help and with --no-such-flag through run and
// checks the conventions above. usage is the usage exit code, which every command
// lists last. A command without options says so with a line "  none: ...".
func CheckHelp(t testing.TB, prog string, cmds []Command, usage Exit, run Run) {
	t.Helper()
	exitSections := map[string]string{}
	for _, c := range cmds {
		name := c.Name
		args := strings.Fields(name)
		code, out, errOut := run(append(args, "--help")...)
		if code != 0 || errOut != "" {
			t.Errorf("%s --help: exit %d, stderr %q", name, code, errOut)
			continue
		}
		m := regexp.MustCompile(`(?s)^Usage: ` + regexp.QuoteMeta(prog+" "+name) + `\b.*?\n\n(.+?)\n\nOptions:\n(.+?)\n\nExit codes:\n(.+?)\n\nExamples:\n(.+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("%s --help lacks a section (Usage, description, Options, Exit codes, Examples, in this order):\n%s", name, out)
			continue
		}
		desc, opts, exits, examples := m[1], m[2], m[3], m[4]
		if len(strings.Fields(desc)) < 8 {
			t.Errorf("%s: description too short: %q", name, desc)
		}
		flags := flagLine.FindAllStringSubmatch(opts, -1)
		if (len(flags) == 0 && !strings.HasPrefix(opts, "  none: ")) || shortFlag.MatchString(opts) {
			t.Errorf("%s: options not listed as --flag:\n%s", name, opts)
		}
		known := map[string]bool{"help": true}
		for _, f := range flags {
			known[f[1]] = true
		}
		for _, a := range args {
			if f, ok := strings.CutPrefix(a, "--"); ok {
				known[f] = true // a mode's flag ("migrate --xen")
			}
		}
		checkExits(t, name, c.Exits, usage, exits)
		if other, dup := exitSections[exits]; dup {
			t.Errorf("%s and %s have the same exit codes (a generic footer?):\n%s", name, other, exits)
		}
		exitSections[exits] = name
		checkExamples(t, prog, name, c.Examples, examples, known)

		code, out, errOut = run(append(args, "--no-such-flag")...)
		want := prog + " " + name + ": unknown flag --no-such-flag (see " + prog + " " + name + " --help)\n"
		if code != usage.Code || out != "" || errOut != want {
			t.Errorf("%s --no-such-flag: exit %d, stdout %q, stderr %q; want %d and %q", name, code, out, errOut, usage.Code, want)
		}
	}
}

// checkExits: the table's exit codes, each with the first line of its meaning, then
// the usage code last (a meaning's further lines indented under it).
func checkExits(t testing.TB, name string, table []Exit, usage Exit, section string) {
	t.Helper()
	if len(table) == 0 || table[0].Code != 0 {
		t.Errorf("%s: the table gives no exit codes starting with 0: %v", name, table)
	}
	for _, e := range append(table[:len(table):len(table)], usage) {
		first, _, _ := strings.Cut(e.Meaning, "\n")
		if !regexp.MustCompile(`(?m)^  ` + strconv.Itoa(e.Code) + ` +` + regexp.QuoteMeta(first) + `$`).MatchString(section) {
			t.Errorf("%s: exit code %d (%q) not listed:\n%s", name, e.Code, first, section)
		}
	}
	last := strings.ReplaceAll("  "+strconv.Itoa(usage.Code)+"  "+usage.Meaning, "\n", "\n      ")
	if !strings.HasSuffix(section, last) {
		t.Errorf("%s: %d is not the last exit code:\n%s", name, usage.Code, section)
	}
}

// checkExamples: at least one example runs this command, with none but its own flags.
func checkExamples(t testing.TB, prog, name string, n int, section string, known map[string]bool) {
	t.Helper()
	if n == 0 {
		t.Errorf("%s: no example in the table", name)
	}
	runs := false
	for _, ex := range strings.Split(strings.TrimRight(section, "\n"), "\n") {
		ex = strings.TrimPrefix(ex, "  ")
		if !strings.HasPrefix(ex, prog+" "+name+" ") && ex != prog+" "+name {
			continue
		}
		runs = true
		cmdline := redirection.Split(ex, 2)[0]
		for _, f := range exampleFlag.FindAllStringSubmatch(cmdline, -1) {
			if !known[f[1]] {
				t.Errorf("%s: example %q uses --%s, which is not among its options", name, ex, f[1])
			}
		}
	}
	if !runs {
		t.Errorf("%s: no example runs %s %s:\n%s", name, prog, name, section)
	}
}
