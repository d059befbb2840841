package testenv

import (
	"os/exec"
	"strings"
	"testing"
)

// MustHave fails the test when a tool is not on PATH.
func MustHave(t testing.TB, tools ...string) {
	t.Helper()
	for _, name := range tools {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s not installed (make deps installs it): %v", name, err)
		}
	}
}

// Run runs a tool and returns its combined output; a missing tool or a failure fails
// the test, with the command line and the output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	MustHave(t, name)
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
