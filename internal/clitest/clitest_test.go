package clitest

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps the errors CheckHelp reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

const goodHelp = `Usage: tool %s [--flag]

Does the thing the tool is for, on the command line as shown.

Options:
  --level N
      how much

Exit codes:
  0   done
  %s
  64  the command line cannot be parsed

Examples:
  tool %s --level 2
`

// fakeTool answers --help with help(name) and an unknown flag as the convention says.
func fakeTool(help func(name string) string) Run {
	return func(args ...string) (int, string, string) {
		name := strings.Join(args[:len(args)-1], " ")
		if args[len(args)-1] == "--help" {
			return 0, help(name), ""
		}
		return 64, "", "tool " + name + ": unknown flag --no-such-flag (see tool " + name + " --help)\n"
	}
}

// TestCheckHelp: a tool that keeps the convention passes; each way of breaking it is
// reported by name.
func TestCheckHelp(t *testing.T) {
	usage := Exit{64, "the command line cannot be parsed"}
	cmds := []Command{
		{Name: "a", Exits: []Exit{{0, "done"}, {1, "found a"}}, Examples: 1},
		{Name: "b", Exits: []Exit{{0, "done"}, {2, "found b"}}, Examples: 1},
	}
	own := map[string]string{"a": "1   found a", "b": "2   found b"}
	for _, tc := range []struct {
		what string
		help func(name string) string
		want string // "" for none
	}{
		{"kept", func(n string) string { return fmt.Sprintf(goodHelp, n, own[n], n) }, ""},
		{"generic footer", func(n string) string { return fmt.Sprintf(goodHelp, n, "1   found a", n) }, "have the same exit codes"},
		{"single dash", func(n string) string {
			return strings.Replace(fmt.Sprintf(goodHelp, n, own[n], n), "  --level", "  -level", 1)
		}, "options not listed as --flag"},
		{"foreign flag", func(n string) string {
			return strings.Replace(fmt.Sprintf(goodHelp, n, own[n], n), "--level 2", "--depth 2", 1)
		}, "uses --depth"},
		{"no examples section", func(n string) string {
			return strings.Split(fmt.Sprintf(goodHelp, n, own[n], n), "\n\nExamples:")[0]
		}, "lacks a section"},
		{"exit 0 missing", func(n string) string {
			return strings.Replace(fmt.Sprintf(goodHelp, n, own[n], n), "  0   done\n", "", 1)
		}, "exit code 0"},
	} {
		r := &recorder{TB: t}
		CheckHelp(r, "tool", cmds, usage, fakeTool(tc.help))
		got := strings.Join(r.errs, "\n")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: reported %q, want %q", tc.what, got, tc.want)
		}
	}
}
