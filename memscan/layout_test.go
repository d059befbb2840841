package memscan

import (
	"flag"
	"reflect"
	"strings"
	"testing"

	"github.com/domainm/domainm/internal/units"
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

// TestLayoutSizesAsEverywhere: split:SIZE and ranges: read sizes as every size in
// Domain M does (internal/units, as --block-size and the configuration: IEC and SI
// units, bare bytes) and "0x..." hex, the form of guest-physical addresses.
func TestLayoutSizesAsEverywhere(t *testing.T) {
	for _, s := range []string{"2GiB", "2G", "2g", "2048MiB", "2048M", "2097152KiB", "2147483648", "2 GiB", "0x80000000", "0X80000000"} {
		l, err := ParseLayout("split:" + s)
		if err != nil || l.String() != "split:0x80000000" {
			t.Errorf("split:%s = %v, %v; want split:0x80000000", s, l, err)
		}
	}
	for _, s := range []string{"3GB", "2000MB", "1GiB", "4096", "4kB", "64KiB", "1T", "1TB"} {
		want, err := units.ParseSize(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseSize(s)
		if err != nil || got != uint64(want) {
			t.Errorf("parseSize(%q) = %d, %v; units.ParseSize says %d", s, got, err, want)
		}
	}
	if l, err := ParseLayout("split:3GB"); err != nil || l.String() != "split:0xb2d05e00" {
		t.Errorf("split:3GB (SI) = %v, %v; want 3e9 = split:0xb2d05e00", l, err)
	}
	l, err := ParseLayout("ranges:0+640KiB@0,1MiB+0x100000@640KiB")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := l.Extents(4 * mib); err != nil || !reflect.DeepEqual(got, []Extent{{0, 640 << 10, 0}, {mib, mib, 640 << 10}}) {
		t.Errorf("ranges with units: %v, %v", got, err)
	}
	for _, s := range []string{"split:0x1M", "split:0x", "split:1.5G", "split:-1", "split:2 GiBs", "split:2Gi B", "ranges:0+4KB@0x10K"} {
		if _, err := ParseLayout(s); err == nil {
			t.Errorf("ParseLayout(%q) succeeded", s)
		}
	}
	if _, err := ParseLayout("split:zz"); err == nil || !strings.Contains(err.Error(), `"4MiB"`) || !strings.Contains(err.Error(), "0x") {
		t.Errorf("split:zz: %v; want the sizes' message and the hex form", err)
	}
}
