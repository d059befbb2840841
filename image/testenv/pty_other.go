//go:build !linux

package testenv

import (
	"os"
	"testing"
)

// OpenPTY fails the test: pseudo-terminals are opened the Linux way only.
func OpenPTY(t testing.TB) (*os.File, string) {
	t.Helper()
	t.Fatal("testenv.OpenPTY: Linux only")
	return nil, ""
}
