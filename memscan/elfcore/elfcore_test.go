package elfcore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestParseValid(t *testing.T) {
	for _, b := range seedCores() {
		c, err := Parse(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if len(c.Loads) != 2 || len(c.Notes) != 1 {
			t.Fatalf("ELF%d: %d loads, %d notes; want 2, 1", c.Class, len(c.Loads), len(c.Notes))
		}
		s := c.Loads[1]
		if s.PAddr != 0x100000 {
			t.Fatalf("ELF%d: second load at %#x, want 0x100000", c.Class, s.PAddr)
		}
		if got := string(b[s.Offset : s.Offset+s.FileSize]); got != "DOMAINM-MARK high" {
			t.Fatalf("ELF%d: segment bytes %q", c.Class, got)
		}
	}
}

// TestParseMalformed: each corruption gives a *FormatError at the right offset.
func TestParseMalformed(t *testing.T) {
	good := seedCores()[0] // ELF64: header 64 bytes, phdrs at 64 (note), 120, 176 (loads)
	le := binary.LittleEndian
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	tests := []struct {
		name    string
		in      []byte
		wantOff int64
	}{
		{"empty", nil, 0},
		{"not elf", []byte("MZ this is not an ELF file at all"), 0},
		{"kdump", mutate(func(b []byte) []byte { copy(b, "KDUMP   "); return b }), 0},
		{"bad class", mutate(func(b []byte) []byte { b[4] = 9; return b }), 4},
		{"not core", mutate(func(b []byte) []byte { le.PutUint16(b[16:], 2); return b }), 16},
		{"truncated header", good[:40], 0},
		{"truncated phdrs", good[:100], 64},
		{"truncated data", good[:len(good)-3], 176},
		{"phentsize", mutate(func(b []byte) []byte { le.PutUint16(b[54:], 40); return b }), 54},
		{"no phdrs", mutate(func(b []byte) []byte { le.PutUint16(b[56:], 0); return b }), 56},
		{"xnum without sections", mutate(func(b []byte) []byte { le.PutUint16(b[56:], 0xffff); return b }), 56},
		{"phoff huge", mutate(func(b []byte) []byte { le.PutUint64(b[32:], 1<<63); return b }), int64(len(good))},
		{"offset overflow", mutate(func(b []byte) []byte { le.PutUint64(b[176+8:], ^uint64(0)-2); return b }), 176},
		{"filesz > memsz", mutate(func(b []byte) []byte { le.PutUint64(b[176+40:], 1); return b }), 176},
		{"paddr wraps", mutate(func(b []byte) []byte { le.PutUint64(b[176+24:], ^uint64(0)-4); return b }), 176},
		{"overlap", mutate(func(b []byte) []byte { le.PutUint64(b[176+24:], 4); return b }), 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(bytes.NewReader(tt.in), int64(len(tt.in)))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v (%T), want *FormatError", err, err)
			}
			if fe.Off != tt.wantOff {
				t.Fatalf("err = %v: offset %#x, want %#x", err, fe.Off, tt.wantOff)
			}
			if c != nil {
				t.Fatal("non-nil core with an error")
			}
		})
	}
}

// TestParseXNum: a count of PN_XNUM is taken from section header 0's sh_info.
func TestParseXNum(t *testing.T) {
	b := seedCores()[0]
	le := binary.LittleEndian
	sh := make([]byte, 64)
	le.PutUint32(sh[44:], 3)
	shoff := uint64(len(b))
	b = append(b, sh...)
	le.PutUint64(b[40:], shoff)
	le.PutUint16(b[58:], 64)
	le.PutUint16(b[60:], 1)
	le.PutUint16(b[56:], 0xffff)
	c, err := Parse(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Loads) != 2 {
		t.Fatalf("%d loads, want 2", len(c.Loads))
	}
	le.PutUint32(b[shoff+44:], MaxSegments+1)
	if _, err := Parse(bytes.NewReader(b), int64(len(b))); !errors.Is(err, ErrFormat) {
		t.Fatalf("huge PN_XNUM count: err = %v, want ErrFormat", err)
	}
}
