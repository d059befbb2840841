package syncpoint

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// Figure is a duration that was measured, or absent: a co-migration that fails does not
// reach every point its figures are taken at, and 0 would read as "no wait" or "no
// downtime". The zero Figure is absent. JSON: nanoseconds, or null when absent.
type Figure struct {
	d  time.Duration
	ok bool
}

// Measured returns a present figure.
func Measured(d time.Duration) Figure { return Figure{d: d, ok: true} }

// Get returns the duration and whether it was measured.
func (f Figure) Get() (time.Duration, bool) { return f.d, f.ok }

// OK reports whether the figure was measured.
func (f Figure) OK() bool { return f.ok }

// Add returns the sum of two figures, absent unless both were measured.
func (f Figure) Add(g Figure) Figure {
	if !f.ok || !g.ok {
		return Figure{}
	}
	return Measured(f.d + g.d)
}

// Absent is how an unmeasured figure is written in text and tables.
const Absent = "n/a"

// String is the duration, or "n/a".
func (f Figure) String() string {
	if !f.ok {
		return Absent
	}
	return f.d.String()
}

// Ms is the duration in whole milliseconds, or "n/a".
func (f Figure) Ms() string {
	if !f.ok {
		return Absent
	}
	return strconv.FormatInt(f.d.Milliseconds(), 10)
}

// MarshalJSON writes nanoseconds, or null.
func (f Figure) MarshalJSON() ([]byte, error) {
	if !f.ok {
		return []byte("null"), nil
	}
	return strconv.AppendInt(nil, int64(f.d), 10), nil
}

// UnmarshalJSON reads nanoseconds, or null.
func (f *Figure) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*f = Figure{}
		return nil
	}
	var ns int64
	if err := json.Unmarshal(b, &ns); err != nil {
		return err
	}
	*f = Measured(time.Duration(ns))
	return nil
}
