package elfcore

import (
	"errors"
	"io"
	"os"
	"testing"
)

// zeroTail serves head and then zeros up to size, standing in for the bulk of a dump.
type zeroTail struct {
	head []byte
	size int64
}

func (z zeroTail) ReadAt(p []byte, off int64) (int, error) {
	if off >= z.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off+int64(n) < z.size {
		if i := off + int64(n); i < int64(len(z.head)) {
			p[n] = z.head[i]
		} else {
			p[n] = 0
		}
		n++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestParseRealQEMUHeader(t *testing.T) {
	head, err := os.ReadFile("testdata/qemu72-q35-32M-head.bin")
	if err != nil {
		t.Fatal(err)
	}
	const fullSize = 0x20403d8
	c, err := Parse(zeroTail{head, fullSize}, fullSize)
	if err != nil {
		t.Fatal(err)
	}
	want := []Segment{
		{Type: PT_LOAD, PAddr: 0, Offset: 0x3d8, FileSize: 32 << 20, MemSize: 32 << 20},
		{Type: PT_LOAD, PAddr: 0xfffc0000, Offset: 0x20003d8, FileSize: 0x40000, MemSize: 0x40000},
	}
	if c.Class != 64 || c.Machine != 3 && c.Machine != 62 || len(c.Notes) != 1 || len(c.Loads) != 2 {
		t.Fatalf("core = %+v", c)
	}
	for i, w := range want {
		g := c.Loads[i]
		if g.PAddr != w.PAddr || g.Offset != w.Offset || g.FileSize != w.FileSize || g.MemSize != w.MemSize {
			t.Errorf("load %d = %+v, want %+v", i, g, w)
		}
	}
	// The same headers with only 1 KiB of file: the first PT_LOAD (at 0xf8) is cut.
	_, err = Parse(zeroTail{head, int64(len(head))}, int64(len(head)))
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Off != 0xf8 {
		t.Fatalf("truncated real dump: err = %v, want FormatError at 0xf8", err)
	}
}
