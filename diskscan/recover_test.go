package diskscan

import (
	"errors"
	"strings"
	"testing"
)

// In tests a parser bug must fail loudly: see bugsPanic.
func init() { bugsPanic = true }

// TestPanicBecomesErrCorrupt: a parser bug met on a hostile image (here an index out of
// range) costs the operation, as an error matching ErrCorrupt, not the process.
func TestPanicBecomesErrCorrupt(t *testing.T) {
	bugsPanic = false
	defer func() { bugsPanic = true }()
	var table []byte
	err := guarded(func(i int) error { _ = table[i]; return nil }, 7)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "index out of range") {
		t.Fatalf("err = %v", err)
	}
	if err := guarded(func(int) error { return nil }, 0); err != nil {
		t.Fatalf("no panic: err = %v", err)
	}
}
