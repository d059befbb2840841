package memscan

import (
	"flag"
	"reflect"
	"testing"
)

const (
	gib = 1 << 30
	mib = 1 << 20
)

func TestLayoutExtents(t *testing.T) {
	tests := []struct {
		layout string
		size   uint64
		want   []Extent
	}{
		{"", 256 * mib, []Extent{{0, 256 * mib, 0}}},
		{"flat", 8 * gib, []Extent{{0, 8 * gib, 0}}},
		// q35 splits at 2 GiB once RAM reaches 0xb0000000 (2.75 GiB).
		{"q35", 0xb0000000 - 2*mib, []Extent{{0, 0xb0000000 - 2*mib, 0}}},
		{"q35", 0xb0000000, []Extent{{0, 2 * gib, 0}, {4 * gib, 0x30000000, 2 * gib}}},
		{"q35", 3 * gib, []Extent{{0, 2 * gib, 0}, {4 * gib, gib, 2 * gib}}},
		// pc (i440fx) splits at 3 GiB once RAM reaches 0xe0000000 (3.5 GiB).
		{"pc", 3 * gib, []Extent{{0, 3 * gib, 0}}},
		{"i440fx", 0xe0000000, []Extent{{0, 3 * gib, 0}, {4 * gib, 0x20000000, 3 * gib}}},
		{"pc", 8 * gib, []Extent{{0, 3 * gib, 0}, {4 * gib, 5 * gib, 3 * gib}}},
		{"split:1G", 3 * gib, []Extent{{0, gib, 0}, {4 * gib, 2 * gib, gib}}},
		{"split:0x80000000", gib, []Extent{{0, gib, 0}}},
		{"ranges:0x100000000+1M@0x1000,0+4K@0", 8 * mib, []Extent{{0, 4096, 0}, {4 * gib, mib, 0x1000}}},
	}
	for _, tt := range tests {
		l, err := ParseLayout(tt.layout)
		if err != nil {
			t.Fatalf("ParseLayout(%q): %v", tt.layout, err)
		}
		got, err := l.Extents(tt.size)
		if err != nil {
			t.Fatalf("%s.Extents(%#x): %v", l, tt.size, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q.Extents(%#x) = %v, want %v", tt.layout, tt.size, got, tt.want)
		}
		// String round-trips.
		l2, err := ParseLayout(l.String())
		if err != nil || !reflect.DeepEqual(l2, l) {
			t.Errorf("ParseLayout(%q) = %v, %v; want %v", l.String(), l2, err, l)
		}
	}
}

func TestLayoutErrors(t *testing.T) {
	bad := []string{"q36", "flat:1", "split:", "split:0", "split:5G", "split:zz",
		"ranges:", "ranges:0+0@0", "ranges:1+2", "ranges:0+1@x", "split:99999999999999999999T"}
	for _, s := range bad {
		if _, err := ParseLayout(s); err == nil {
			t.Errorf("ParseLayout(%q) succeeded", s)
		}
	}
	// Extents that leave the file, wrap or overlap are rejected at open time.
	for _, s := range []string{
		"ranges:0+2M@0",                  // past the 1 MiB file
		"ranges:0+4K@0xfffffffffffff000", // offset+size wraps
		"ranges:0+8K@0,4K+4K@0",          // overlap in GPA
		"ranges:0xfffffffffffff000+8K@0", // GPA wraps
	} {
		l, err := ParseLayout(s)
		if err != nil {
			t.Fatalf("ParseLayout(%q): %v", s, err)
		}
		if ext, err := l.Extents(mib); err == nil {
			t.Errorf("%q.Extents(1 MiB) = %v, want error", s, ext)
		}
	}
}

func TestLayoutIsFlagValue(t *testing.T) {
	var l Layout
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Var(&l, "layout", "")
	if err := fs.Parse([]string{"--layout", "q35"}); err != nil {
		t.Fatal(err)
	}
	if l.String() != "q35" {
		t.Fatalf("layout = %s", l)
	}
}
