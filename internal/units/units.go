// Package units parses the sizes and durations that Domain M's configuration file and
// both command lines (domainm, domainm-migrate) take, so that "4MiB" or "30s" means the
// same everywhere. It imports only the standard library: domainm-migrate links it.
//
// Sizes: a whole number of bytes, bare or with a unit. IEC units are powers of 1024
// (KiB, MiB, GiB, TiB; K, M, G, T alone mean the same, as in GNU dd and systemd), SI
// units powers of 1000 (kB or KB, MB, GB, TB). The unit is case-insensitive apart from
// the i that makes it IEC; a space may separate it from the number.
//
// Durations: Go's form ("30s", "1m30s", "500ms", "2h"); a bare number is an error that
// says it needs a unit (30 could be seconds or nanoseconds).
package units

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrNeedsUnit is a duration given as a bare number.
var ErrNeedsUnit = errors.New("needs a unit")

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "ti": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// ParseSize parses a size in bytes: "4194304", "4MiB", "64 KiB", "1G", "500MB".
func ParseSize(s string) (int64, error) {
	str := strings.TrimSpace(s)
	num := strings.TrimRightFunc(str, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToLower(strings.TrimSpace(str[len(num):]))
	mult, ok := sizeUnits[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || !ok || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("expected a size such as 4194304 (bytes), \"4MiB\", \"64KiB\" or \"500MB\", got %q", s)
	}
	return n * mult, nil
}

// FormatSize writes n in the largest IEC unit that divides it ("256KiB", "4MiB"), in
// bytes when none does ("1000"); ParseSize reads it back.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// NeedsUnit is the message for a duration given as the bare number n (shown as the
// user wrote it, quoted or not), as in
// `needs a unit: 30 is a bare number; write a duration such as "30s", "30m" or "30h"`.
func NeedsUnit(shown, n string) string {
	return ErrNeedsUnit.Error() + ": " + bareNumber(shown, n)
}

func bareNumber(shown, n string) string {
	return fmt.Sprintf("%s is a bare number; write a duration such as \"%ss\", \"%sm\" or \"%sh\"", shown, n, n, n)
}

// ParseDuration parses a duration such as "30s", "1m30s" or "500ms". A bare number,
// 0 included, is an error wrapping ErrNeedsUnit.
func ParseDuration(s string) (time.Duration, error) {
	str := strings.TrimSpace(s)
	if _, err := strconv.ParseFloat(str, 64); err == nil {
		return 0, fmt.Errorf("%w: %s", ErrNeedsUnit, bareNumber(str, str))
	}
	d, err := time.ParseDuration(str)
	if err != nil {
		return 0, fmt.Errorf("expected a duration such as \"30s\", \"1m30s\" or \"500ms\", got %q", s)
	}
	return d, nil
}

// Size is a flag.Value for a size in bytes: --block-size 4MiB.
type Size int64

// Set parses a size (flag.Value).
func (s *Size) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// String writes the size as FormatSize does.
func (s *Size) String() string {
	if s == nil {
		return "0"
	}
	return FormatSize(int64(*s))
}

// Duration is a flag.Value for a duration that needs a unit: --timeout 30s.
type Duration time.Duration

// Set parses a duration (flag.Value).
func (d *Duration) Set(v string) error {
	x, err := ParseDuration(v)
	if err != nil {
		return err
	}
	*d = Duration(x)
	return nil
}

// String writes the duration as time.Duration does without its zero tails ("10s",
// "15m", "1h30m"); ParseDuration reads it back.
func (d *Duration) String() string {
	if d == nil {
		return "0s"
	}
	return FormatDuration(time.Duration(*d))
}

// FormatDuration writes d as time.Duration does without its zero tails: "15m" for
// 15m0s, "2h" for 2h0m0s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
