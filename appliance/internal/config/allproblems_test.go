package config

import (
	"strings"
	"testing"
	"time"
)

// TestAllProblemsAtOnce: values the TOML library cannot decode (it stops at the first)
// are all reported together with the unknown keys and invalid values, in line order,
// each with the full key path; durations without a unit say so.
func TestAllProblemsAtOnce(t *testing.T) {
	src := `[target]
name = "a"
memory = "file:/x"
[memory]
interval = "30"
workers = "two"
stall_timeout = 90
block_size = "4 parsecs"
[disk]
interval = "1 hour"
[rules]
debounce = 2
[[alerts.sink]]
name = "a"
type = "file"
path = "/tmp/a"
[[alerts.sink]]
name = "b"
type = "file"
path = "/tmp/b"
min_severity = "urgent"
timeout = "5"
colour = "red"
`
	c, errs := ParseAll("c.toml", []byte(src))
	if errs == nil {
		t.Fatal("accepted")
	}
	want := []string{
		`c.toml:5: memory.interval: needs a unit: "30" is a bare number; write a duration such as "30s", "30m" or "30h"`,
		`c.toml:6: memory.workers: incompatible types`,
		`c.toml:7: memory.stall_timeout: needs a unit: 90 is a bare number`,
		`c.toml:8: memory.block_size: expected a size`,
		`c.toml:10: disk.interval: invalid duration`,
		`c.toml:12: rules.debounce: needs a unit: 2 is a bare number`,
		`c.toml:21: alerts.sink[1].min_severity: severity "urgent"`,
		`c.toml:22: alerts.sink[1].timeout: needs a unit: "5" is a bare number`,
		`c.toml:23: alerts.sink[1].colour: unknown key`,
	}
	if len(errs.List) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(errs.List), len(want), errs)
	}
	for i, w := range want {
		if i >= len(errs.List) || !strings.HasPrefix(errs.List[i].Error(), w) {
			t.Errorf("problem %d: want prefix %q\n%v", i, w, errs)
		}
	}
	// What could be read is there, the rest has its default.
	if c == nil || c.Target.Name != "a" || c.Memory.Interval != DefaultMemoryInterval || c.Memory.Workers != 1 || len(c.Alerts.Sinks) != 2 {
		t.Fatalf("best-effort config = %+v", c)
	}
	if c.Line("alerts.sink[1].path") != 20 || c.Line("memory") != 4 {
		t.Errorf("Line: %d %d", c.Line("alerts.sink[1].path"), c.Line("memory"))
	}
	// Parse keeps its contract: no config with errors.
	if c, err := Parse("c.toml", []byte(src)); c != nil || err == nil {
		t.Errorf("Parse = %v, %v", c, err)
	}
	// A syntax error is the one problem a file that is not TOML can report.
	if c, errs := ParseAll("c.toml", []byte("[target\nname = 1\n")); c != nil || errs == nil || len(errs.List) != 1 {
		t.Errorf("syntax error: %v %v", c, errs)
	}
	c, errs = ParseAll("c.toml", []byte("[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\ninterval = \"90s\"\n"))
	if errs != nil || c.Memory.Interval != 90*time.Second {
		t.Errorf("good file: %v %v", c, errs)
	}
}
