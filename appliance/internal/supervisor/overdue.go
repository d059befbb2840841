package supervisor

import (
	"fmt"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert"
)

// overdueFactor: a memory pass still running after this many memory intervals is
// overdue. It is not stuck (memory.stall_timeout catches that: no block finishes), but
// the target is checked far less often than configured, typically because of a slow
// rule after a reload or much changed memory.
const overdueFactor = 3

// passOverdue alerts, once per pass, that the running pass is overdue (memory loop only).
func (m *memLoop) passOverdue() {
	m.late = true
	m.s.m.passesOverdue.Inc()
	took := m.s.clk.Now().Sub(m.passStart).Round(time.Second)
	m.s.log.Warn("memory pass overdue", "running_for", took, "interval", m.s.memInterval(), "rules", m.s.rules.id())
	m.s.emit(alert.Health(m.s.clk.Now(), alert.SevMedium, "memory", "pass-overdue",
		fmt.Sprintf("memory pass over %s has run for %v, more than %d memory intervals (%v): the target's memory is checked less often than configured (a slow rule? rules %s, %d rules)",
			m.s.currentTarget().Name, took, overdueFactor, m.s.memInterval(), m.s.rules.id(), m.s.rules.count())))
}

// lateEnded says how long an overdue pass took in the end (memory loop only).
func (m *memLoop) lateEnded(o passOutcome) {
	if !m.late {
		return
	}
	m.late = false
	took := m.s.clk.Now().Sub(o.started).Round(time.Millisecond)
	m.s.emit(alert.Health(m.s.clk.Now(), alert.SevInfo, "memory", "pass-overdue-ended",
		fmt.Sprintf("overdue memory pass over %s ended after %v (memory.interval %v; complete: %v)",
			m.s.currentTarget().Name, took, m.s.memInterval(), o.err == nil && o.res.Complete)))
}
