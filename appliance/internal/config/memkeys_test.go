package config

import (
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
)

// TestMemoryScanKeys: the YARA time limit per block and the match cap are config keys
// (issue 8 item 10, issue 9 item 11), and the default window is scan-memory's (issue 8
// item 11).
func TestMemoryScanKeys(t *testing.T) {
	base := "[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\n"
	c, err := Parse("c.toml", []byte(base+"yara_timeout = \"10s\"\nmax_matches_per_rule = 5000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Memory.YaraTimeout != 10*time.Second || c.Memory.MaxMatchesPerRule != 5000 {
		t.Errorf("memory = %+v", c.Memory)
	}
	d := Default().Memory
	if d.BlockSize != memscan.DefaultBlockSize || d.Overlap != memscan.DefaultOverlap || d.YaraTimeout != memscan.DefaultBlockTimeout || d.MaxMatchesPerRule != 256 {
		t.Errorf("defaults = %+v", d)
	}
	_, err = Parse("c.toml", []byte(base+"yara_timeout = \"500ms\"\nmax_matches_per_rule = 0\n"))
	for _, want := range []string{
		"c.toml:5: memory.yara_timeout: expected whole seconds, at least 1",
		"c.toml:6: memory.max_matches_per_rule: expected a number of matches from 1 to 1000000, got 0",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// TestRescanAfterPassesKey: how long an unchanged block's result may be reused is a key,
// defaulting to the driver's bound, and 0 (reuse for ever) is refused.
func TestRescanAfterPassesKey(t *testing.T) {
	base := "[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\n"
	if d := Default().Memory.RescanAfterPasses; d != memscan.DefaultReusePasses {
		t.Errorf("default rescan_after_passes %d, want %d", d, memscan.DefaultReusePasses)
	}
	c, err := Parse("c.toml", []byte(base+"rescan_after_passes = 3\n"))
	if err != nil || c.Memory.RescanAfterPasses != 3 {
		t.Fatalf("rescan_after_passes = 3: %+v, %v", c.Memory, err)
	}
	_, err = Parse("c.toml", []byte(base+"rescan_after_passes = 0\n"))
	if want := "c.toml:5: memory.rescan_after_passes: expected a number of passes from 1"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v lacks %q", err, want)
	}
}

// TestRunBudgetKey: the driver's run budget (issue 15) is a key with the driver's
// default, in duration units; "0s" is no bound (a negative budget for the driver), a
// bare number or a budget past 1s is refused.
func TestRunBudgetKey(t *testing.T) {
	base := "[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\n"
	d := Default().Memory
	if d.RunBudget != memscan.DefaultRunBudget || d.DriverRunBudget() != memscan.DefaultRunBudget {
		t.Errorf("default run_budget %v (driver %v), want %v", d.RunBudget, d.DriverRunBudget(), memscan.DefaultRunBudget)
	}
	c, err := Parse("c.toml", []byte(base+"run_budget = \"25ms\"\n"))
	if err != nil || c.Memory.RunBudget != 25*time.Millisecond || c.Memory.DriverRunBudget() != 25*time.Millisecond {
		t.Fatalf("run_budget = \"25ms\": %+v, %v", c.Memory, err)
	}
	c, err = Parse("c.toml", []byte(base+"run_budget = \"0s\"\n"))
	if err != nil || c.Memory.RunBudget != 0 || c.Memory.DriverRunBudget() >= 0 {
		t.Fatalf("run_budget = \"0s\": %+v (driver %v), %v", c.Memory, c.Memory.DriverRunBudget(), err)
	}
	for in, want := range map[string]string{
		"run_budget = \"2s\"\n":   "c.toml:5: memory.run_budget: expected a duration from \"0s\"",
		"run_budget = \"-5ms\"\n": "c.toml:5: memory.run_budget: expected a duration from \"0s\"",
		"run_budget = 10\n":       "memory.run_budget",
	} {
		_, err := Parse("c.toml", []byte(base+in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v lacks %q", in, err, want)
		}
	}
	_, err = Parse("c.toml", []byte(base+"run_budget = 10\n"))
	if err == nil || !strings.Contains(err.Error(), "needs a unit") {
		t.Errorf("run_budget = 10: error %v lacks \"needs a unit\"", err)
	}
}
