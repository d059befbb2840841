package units

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "4096": 4096, "4096B": 4096, "4KiB": 4096, "4 KiB": 4096, "4k": 4096, "4K": 4096, "4Ki": 4096,
		"4kB": 4000, "4KB": 4000, "4MiB": 4 << 20, "4M": 4 << 20, "4MB": 4e6, "1GiB": 1 << 30, "1G": 1 << 30,
		"2GB": 2e9, "1TiB": 1 << 40, "1TB": 1e12, " 256KiB ": 256 << 10, "64kib": 64 << 10,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "4 MiBs", "4XB", "-1", "1.5MiB", "4 Mbit", "9999999999TiB", "0x1000"} {
		if got, err := ParseSize(in); err == nil || !strings.Contains(err.Error(), "expected a size such as") {
			t.Errorf("ParseSize(%q) = %d, %v; want an error", in, got, err)
		}
	}
	for _, n := range []int64{0, 1000, 4096, 256 << 10, 4 << 20, 3 << 30, 1 << 40, 4e6} {
		if got, err := ParseSize(FormatSize(n)); err != nil || got != n {
			t.Errorf("FormatSize(%d) = %q reads back as %d, %v", n, FormatSize(n), got, err)
		}
	}
	if FormatSize(256<<10) != "256KiB" || FormatSize(1000) != "1000" || FormatSize(4<<20) != "4MiB" {
		t.Errorf("FormatSize: %q %q %q", FormatSize(256<<10), FormatSize(1000), FormatSize(4<<20))
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "1m30s": 90 * time.Second, "500ms": 500 * time.Millisecond, " 2h ": 2 * time.Hour, "0s": 0} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"30", "0", "1.5", " 10 "} {
		_, err := ParseDuration(in)
		if !errors.Is(err, ErrNeedsUnit) || !strings.HasPrefix(err.Error(), "needs a unit: ") || !strings.Contains(err.Error(), "s\", \"") {
			t.Errorf("ParseDuration(%q): %v; want needs a unit", in, err)
		}
	}
	if _, err := ParseDuration("soon"); err == nil || errors.Is(err, ErrNeedsUnit) || !strings.Contains(err.Error(), "expected a duration") {
		t.Errorf("ParseDuration(soon): %v", err)
	}
	for d, want := range map[time.Duration]string{0: "0s", 10 * time.Second: "10s", 15 * time.Minute: "15m", 2 * time.Hour: "2h",
		90 * time.Minute: "1h30m", 3630 * time.Second: "1h0m30s", 1500 * time.Millisecond: "1.5s"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := ParseDuration(want); err != nil || back != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", want, back, err, d)
		}
	}
	if got := NeedsUnit(`"30"`, "30"); got != `needs a unit: "30" is a bare number; write a duration such as "30s", "30m" or "30h"` {
		t.Errorf("NeedsUnit: %s", got)
	}
}

// TestFlags: the flag.Values parse as ParseSize and ParseDuration and print defaults that
// read back.
func TestFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	size, d := Size(256<<10), Duration(10*time.Second)
	fs.Var(&size, "block-size", "")
	fs.Var(&d, "timeout", "")
	if fs.Lookup("block-size").DefValue != "256KiB" || fs.Lookup("timeout").DefValue != "10s" {
		t.Errorf("defaults %q %q", fs.Lookup("block-size").DefValue, fs.Lookup("timeout").DefValue)
	}
	if err := fs.Parse([]string{"--block-size", "4MiB", "--timeout", "1m"}); err != nil || size != 4<<20 || time.Duration(d) != time.Minute {
		t.Errorf("parse: %v %d %v", err, size, time.Duration(d))
	}
	fs.SetOutput(new(strings.Builder))
	if err := fs.Parse([]string{"--timeout", "30"}); err == nil || !strings.Contains(err.Error(), "needs a unit") {
		t.Errorf("--timeout 30: %v", err)
	}
}
