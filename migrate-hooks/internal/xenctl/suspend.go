package xenctl

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/domainm/domainm/appliance/control/xenstore"
)

// shutdownSuspend is SHUTDOWN_suspend (xen/include/public/sched.h): the reason of a
// domain that has stopped for its state to be saved, as libxl's save and migration
// stream stop it before their last copy.
const shutdownSuspend = 2

// DomainState is what Xen reports of a domain (xc_domain_getinfo).
type DomainState struct {
	Dying, Shutdown, Paused bool
	Reason                  uint // shutdown reason, meaningful when Shutdown
}

// suspended decides from one reading of the target's state whether it has stopped for
// its migration's last copy (done), or can no longer do so (err).
func suspended(dom uint32, st DomainState, exists bool) (done bool, err error) {
	switch {
	case !exists:
		return false, fmt.Errorf("domain %d is gone and was never seen suspended", dom)
	case st.Dying:
		return false, fmt.Errorf("domain %d is dying and was never seen suspended", dom)
	case st.Shutdown && st.Reason == shutdownSuspend:
		return true, nil
	case st.Shutdown:
		return false, fmt.Errorf("domain %d shut down with reason %d, not suspend", dom, st.Reason)
	}
	return false, nil
}

// suspendPoll bounds how long a missed watch event can delay the answer.
const suspendPoll = 250 * time.Millisecond

// WaitSuspend returns once domain dom has stopped with reason suspend — in a
// migration, libxl's request (control/shutdown = "suspend") acknowledged by the guest,
// which then stops: from then on the guest runs no more at this host, and the source
// domain still exists until the destination has it and xl destroys it here. It prints
// "suspended DOM UNIXNANO". The coordinator sends prepare at that moment, before the
// domain (and its frames, which Domain M maps) disappears.
//
// It watches @releaseDomain (xenstored fires it when a domain shuts down, as libxl's
// own wait does) and the domain's control/shutdown node, and reads the state every
// 250 ms besides, in case xenstore is not there or an event is missed.
func WaitSuspend(ctx context.Context, dom uint32, out io.Writer) error {
	var events <-chan xenstore.Event
	if xs, err := xenstore.Open(); err == nil {
		defer xs.Close()
		if err := xs.Watch("@releaseDomain", "release"); err == nil {
			node := fmt.Sprintf("/local/domain/%d/control/shutdown", dom)
			if err := xs.Watch(node, "shutdown"); err != nil {
				// @releaseDomain and the poll still answer; say why it is later
				slog.Warn("wait-suspend: no watch on the shutdown request", "node", node, "err", err)
			}
			events = xs.Events()
		}
	}
	tick := time.NewTicker(suspendPoll)
	defer tick.Stop()
	for {
		st, ok, err := State(dom)
		if err != nil {
			return err
		}
		done, err := suspended(dom, st, ok)
		if err != nil {
			return err
		}
		if done {
			fmt.Fprintf(out, "suspended %d %d\n", dom, time.Now().UnixNano())
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("domain %d not suspended: %w", dom, ctx.Err())
		case _, open := <-events:
			if !open {
				events = nil // the poll goes on
			}
		case <-tick.C:
		}
	}
}
