package yara

import (
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
)

// TestPassCost: the rules-slow estimate's cost per window (WindowCost.Pass) from a
// window's time alone (F + v: a part per libyara call and a part per window) and
// screened in runs of DefaultBatch (F/16 + v), in a run as long as the driver makes it
// (as many windows as fit DefaultRunBudget, at most DefaultBatch).
func TestPassCost(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	if memscan.DefaultRunBudget != 10*time.Millisecond || memscan.DefaultBatch != 16 {
		t.Fatalf("the cases below assume a 10 ms run budget and runs of at most 16")
	}
	for _, c := range []struct {
		alone, screened, want time.Duration
	}{
		{ms(2), 0, ms(2)},                     // not screened
		{ms(2), ms(2.5), ms(2)},               // the screen does not pay: scanned alone
		{ms(0.32), ms(0.17), ms(0.17)},        // F 0.16, v 0.16: 16 windows fit 10 ms (0.17 each)
		{ms(1.6), ms(1.225), ms(1.2 + 0.4/8)}, // F 0.4, v 1.2: runs of 8 (10 ms; 9 windows would be 11.2 ms)
		{ms(4.9), ms(3.025), ms(2.9 + 2.0/2)}, // F 2, v 2.9: runs of 2 (7.8 ms; 3 would be 10.7 ms)
		{ms(9.9), ms(8.025), ms(9.9)},         // F 2, v 7.9: runs of 1, scanned alone
	} {
		got := passCost(c.alone, c.screened)
		if d := got - c.want; d > time.Microsecond || d < -time.Microsecond {
			t.Errorf("passCost(alone %v, screened %v) = %v, want %v", c.alone, c.screened, got, c.want)
		}
	}
}
