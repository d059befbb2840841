package yara_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// TestWindowCostScreened: for a rule set the memory driver screens, with a fixed cost
// per libyara call that matters (300 rules of 4 literals, each condition a loop that
// reads no memory: about a third of a window's time, as with elastic's 3,021 rules), the
// rules-slow estimate's cost per window (WindowCost.Pass) takes the screen into account:
// a screened time is measured and Pass lies between it and the time of a window alone
// (what the estimate took before). For a set that is not screened (a module), Pass is
// the time alone and no screen is timed.
func TestWindowCostScreened(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(15, 2))
	var src strings.Builder
	for i := range 300 {
		fmt.Fprintf(&src, "rule r%d { strings:", i)
		for j := range 4 {
			fmt.Fprintf(&src, " $s%d = { %02x %02x %02x %02x %02x %02x %02x %02x }", j,
				rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256))
		}
		fmt.Fprintf(&src, " condition: for all i in (1..40): (i < 100) and any of them }\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "many.yar"), []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := yara.Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	sample := make([]byte, memscan.DefaultBlockSize+memscan.DefaultOverlap)
	for i := range sample {
		sample[i] = byte(rng.Uint32())
	}

	var wc yara.WindowCost
	for i := range 5 { // the least loaded of 5: a window alone over DefaultRunBudget is not screened
		w, err := r.WindowCost(sample, 1<<20, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 || w.Alone < wc.Alone {
			wc = w
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("per window: alone %v, screened in runs of %d %v, estimate for a pass %v; load %s",
		wc.Alone, memscan.DefaultBatch, wc.Screened, wc.Pass, strings.TrimSpace(string(load)))
	// The estimate was the time alone; the driver screens this set in runs of
	// DefaultRunBudget / Pass windows, which cost between Screened and Alone each
	// (TestPassCost: how much, from the two figures, which a loaded machine moves).
	if wc.Screened <= 0 || wc.Pass > wc.Alone || wc.Pass < min(wc.Screened, wc.Alone) {
		t.Fatalf("a screened set: %+v, want a screened time and Screened <= Pass <= Alone", wc)
	}

	// Not screened: a module's function may read a window without a match.
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, "m.yar"), []byte(`import "math"
rule ent { strings: $a = "WINDOWCOST" condition: $a and math.entropy(0, 4096) > 7 }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	r2, err := yara.Compile(dir2)
	if err != nil {
		t.Fatal(err)
	}
	wc2, err := r2.WindowCost(sample, 1<<20, 10*time.Second)
	if err != nil || wc2.Screened != 0 || wc2.Pass != wc2.Alone || wc2.Alone <= 0 {
		t.Errorf("a set that is not screened: %+v, %v; want Pass = Alone and no screen", wc2, err)
	}
}
