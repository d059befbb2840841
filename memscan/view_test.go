package memscan

import (
	"os"
	"testing"
)

// TestViewTruncatedUnderMapping: looking at a RAM file in place (the driver's zero and
// change checks) gives an error, not a SIGBUS crash, once the file shrank.
func TestViewTruncatedUnderMapping(t *testing.T) {
	path := writeSparse(t, 1*mib, map[int64]string{mib - 4: "TAIL", 0: "HEAD"})
	src, err := OpenFile(path, Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var got string
	if err := src.View(0, 4, func(b []byte) { got = string(b) }); err != nil || got != "HEAD" {
		t.Fatalf("view at 0: %q, %v", got, err)
	}
	if err := src.View(mib-4, 8, func([]byte) {}); err == nil {
		t.Fatal("view past the end of the range succeeded")
	}
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	sum := 0
	err = src.View(0, mib, func(b []byte) {
		for _, c := range b {
			sum += int(c)
		}
	})
	if err == nil {
		t.Fatal("view past the truncated end succeeded")
	}
	if err := src.View(0, 4096, func([]byte) {}); err != nil {
		t.Fatalf("view below the truncated end: %v", err)
	}
}
