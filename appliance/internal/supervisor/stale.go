package supervisor

import (
	"context"
	"sync/atomic"

	"github.com/domainm/domainm/appliance/control"
)

// A coordinator that gave up on prepare or resume acts without it (rolls the pair back),
// so the supervisor must not carry it out later: see "Stale requests" in package
// control. The memory loop admits a command only if its requester still waits and its
// epoch is not below one accepted already, and commits its change only if the requester
// still waits then; the fence makes "committed" and "abandoned" exclusive, so the answer
// the coordinator gets and the supervisor's state agree.

// fence settles, once, whether a command is carried out.
type fence struct {
	ctx   context.Context
	state atomic.Int32 // 0 open, 1 committed, 2 abandoned
}

// commit claims the command for the loop, just before it changes what is watched; it
// fails when the requester left, its deadline passed or it was abandoned.
func (f *fence) commit() error {
	if f == nil {
		return nil
	}
	if err := control.Live(f.ctx); err != nil {
		f.state.CompareAndSwap(0, 2)
		return err
	}
	if !f.state.CompareAndSwap(0, 1) {
		return control.Errorf(control.CodeExpired, "abandoned while it was carried out: its deadline passed")
	}
	return nil
}

// abandon gives the command up for its caller; false if the loop committed it already.
func (f *fence) abandon() bool { return f.state.CompareAndSwap(0, 2) }

// admit decides whether the loop takes up c at all: its requester still waits and its
// epoch is the highest so far (it then becomes the highest).
func (m *memLoop) admit(c memCmd) error {
	if c.fence == nil {
		return nil
	}
	what := "resume"
	if c.prepare {
		what = "prepare"
	}
	if err := control.Live(c.fence.ctx); err != nil {
		return err
	}
	e := control.Epoch(c.fence.ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	if e < m.epoch {
		return control.Errorf(control.CodeStale, "%s with epoch %d: epoch %d was accepted since (a later request of the coordinator)", what, e, m.epoch)
	}
	m.epoch = e
	return nil
}

// live reports, without claiming the command, whether its requester still waits.
func (f *fence) live() error {
	if f == nil {
		return nil
	}
	if f.state.Load() == 2 {
		return control.Errorf(control.CodeExpired, "abandoned: its deadline passed")
	}
	return control.Live(f.ctx)
}
