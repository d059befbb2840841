package supervisor

import (
	"time"

	"github.com/domainm/domainm/image/testenv"
)

// fakeClock is a Clock that moves only when the test calls Advance.
type fakeClock = testenv.FakeClock

var _ Clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock {
	return testenv.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}
