package elfcore

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParse checks that Parse never panics and that what it accepts is consistent:
// a core exactly when no error, every load's bytes inside the input, no overlaps.
func FuzzParse(f *testing.F) {
	for _, b := range seedCores() {
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(bytes.NewReader(b), int64(len(b)))
		if (c == nil) == (err == nil) {
			t.Fatalf("core %v with error %v", c, err)
		}
		if err != nil {
			var fe *FormatError
			if errors.As(err, &fe) && (fe.Off < 0 || fe.Off > int64(len(b))) {
				t.Fatalf("error offset %#x outside the %d-byte input: %v", fe.Off, len(b), err)
			}
			return
		}
		for i, s := range c.Loads {
			if s.Offset+s.FileSize > uint64(len(b)) || s.Offset+s.FileSize < s.Offset {
				t.Fatalf("load %d %+v outside the input", i, s)
			}
			for j := 0; j < i; j++ {
				p := c.Loads[j]
				if s.PAddr < p.PAddr+p.MemSize && p.PAddr < s.PAddr+s.MemSize {
					t.Fatalf("loads %d and %d overlap", j, i)
				}
			}
		}
	})
}
