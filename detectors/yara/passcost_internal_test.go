package yara

import (
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
)

// TestPassCost: the rules-slow estimate's cost per window (WindowCost.Pass) from a
// window's time alone and screened in runs of DefaultBatch, in a run as long as the
// driver makes it (as many windows as fit DefaultRunBudget, at most DefaultBatch): from
// alone for runs of 1 to screened for runs of 32, in proportion.
func TestPassCost(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	if memscan.DefaultRunBudget != 10*time.Millisecond || memscan.DefaultBatch != 32 {
		t.Fatalf("the cases below assume a 10 ms run budget and runs of at most 32")
	}
	for _, c := range []struct {
		alone, screened, want time.Duration
	}{
		{ms(2), 0, ms(2)},                          // not screened
		{ms(2), ms(2.5), ms(2)},                    // the screen does not pay: scanned alone
		{ms(0.32), ms(0.17), ms(0.17)},             // 32 windows fit 10 ms
		{ms(0.8), ms(0.5), ms(0.8 - 0.3*14/31)},    // runs of 15 (9.97 ms; 16 would be 10.48 ms)
		{ms(1.6), ms(1.225), ms(1.6 - 0.375*5/31)}, // runs of 6 (9.24 ms; 7 would be 10.69 ms)
		{ms(4.9), ms(3.025), ms(4.9 - 1.875/31)},   // runs of 2
		{ms(3.0), ms(2.3), ms(3.0 - 0.7*2/31)},     // elastic's, about: runs of 3
		{ms(9.9), ms(8.025), ms(9.9)},              // runs of 1, scanned alone
	} {
		got := passCost(c.alone, c.screened)
		if d := got - c.want; d > time.Microsecond || d < -time.Microsecond {
			t.Errorf("passCost(alone %v, screened %v) = %v, want %v", c.alone, c.screened, got, c.want)
		}
	}
}
