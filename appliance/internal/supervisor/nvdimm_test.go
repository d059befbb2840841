package supervisor

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/memscan"
)

// TestWaitingForNVDIMM: inside the appliance VM the memory source is an nvdimm; one
// the VM was started without is waited for, not a failed start, and status, health
// and the alert name the handle expected (problem memory-source-missing), until it is
// there.
func TestWaitingForNVDIMM(t *testing.T) {
	var present atomic.Bool
	open := func(spec, layout string) (memscan.Source, error) {
		if !present.Load() {
			return nil, &memscan.NVDIMMMissingError{Handle: 3, Seen: []string{"nmem0=0x1"}}
		}
		return OpenSource(spec, layout)
	}
	h := newHarness(t, harnessOpts{open: open}) // returns after READY=1
	st := h.sup.Status(context.Background())
	if st.State != control.StateWaiting || st.Health == nil {
		t.Fatalf("status while the nvdimm is missing: %+v", st)
	}
	var msg string
	for _, p := range st.Health.Problems {
		if p.Code == control.ProblemSourceMissing {
			msg = p.Message
		}
	}
	const want = "no nvdimm with NFIT handle 0x3 (QEMU -device nvdimm,slot=2)"
	if !strings.Contains(msg, want) || !strings.Contains(msg, "present: nmem0=0x1") {
		t.Errorf("problem %s = %q, want it to name %q and what is present; problems %+v", control.ProblemSourceMissing, msg, want, st.Health.Problems)
	}
	if a := h.alerts.with("memory-source-waiting", ""); len(a) != 1 || !strings.Contains(a[0].Message, want) {
		t.Errorf("waiting alert does not name the nvdimm:\n%s", h.alerts.dump())
	}
	present.Store(true)
	h.waitFor("monitoring", func() bool {
		h.clk.Advance(time.Second)
		return h.sup.Status(context.Background()).State == control.StateMonitoring
	})
	for _, p := range h.sup.Status(context.Background()).Health.Problems {
		if p.Code == control.ProblemSourceMissing {
			t.Errorf("%s still reported once monitoring", p.Code)
		}
	}
}
