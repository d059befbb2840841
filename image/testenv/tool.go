package testenv

import (
	"os"
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

// WriteAt writes data at byte off of the existing file path (a disk image, a guest's RAM
// file), as an attacker with raw access would, failing the test on error.
func WriteAt(t testing.TB, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatalf("%s: writing %d bytes at %#x: %v", path, len(data), off, err)
	}
}
