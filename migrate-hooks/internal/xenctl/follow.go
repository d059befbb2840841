package xenctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/control/xenstore"
)

// followStore is what Follow needs of xenstore.
type followStore interface {
	Read(path string) (string, error)
	Write(path, value string) error
}

// followXen is what Follow needs of Xen: the target's state and its p2m's runs.
type followXen struct {
	state  func(dom uint32) (DomainState, bool, error)
	frames func(dom uint32) ([]FrameRun, error)
}

func xenFollow() followXen {
	return followXen{state: State, frames: func(dom uint32) ([]FrameRun, error) {
		g, err := MaxGPFN(dom)
		if err != nil {
			return nil, err
		}
		return Frames(dom, g)
	}}
}

// Follow keeps Domain M's domainm/frames equal to Xen's p2m of the target, read every
// period, until the target is gone or a later grant names another target (or ctx ends).
// Domain M's supervisor maps what the list names at each refresh, besides its own
// sweep of the low 4 GiB: a frame the target populates elsewhere (Xen lets a guest
// populate far above 4 GiB) is found only through this list, and the grant wrote it
// once. It prints a line per change.
func Follow(ctx context.Context, dm, target uint32, period time.Duration, out io.Writer) error {
	xs, err := xenstore.Open()
	if err != nil {
		return err
	}
	defer xs.Close()
	return follow(ctx, xs, xenFollow(), dm, target, period, out)
}

func follow(ctx context.Context, xs followStore, x followXen, dm, target uint32, period time.Duration, out io.Writer) error {
	home := fmt.Sprintf("/local/domain/%d/domainm", dm)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		if t, err := xs.Read(home + "/target"); err != nil || strings.TrimSpace(t) != strconv.Itoa(int(target)) {
			fmt.Fprintf(out, "follow: domainm/target is %q (%v), not %d: a later grant; stopping\n", t, err, target)
			return nil
		}
		st, ok, err := x.state(target)
		if err != nil {
			return err
		}
		if !ok || st.Dying {
			fmt.Fprintf(out, "follow: domain %d is gone; stopping\n", target)
			return nil
		}
		var runs []FrameRun
		if !st.Shutdown { // a domain stopped (a migration's last copy) or dying is not read: Xen frees its frames
			if runs, err = x.frames(target); err != nil {
				return err
			}
			// ...nor one that stopped while it was read (the rehearsal of 8533dcd wrote
			// a migrating target's p2m without its special frames, read as it went)
			if st2, ok2, err := x.state(target); err != nil || !ok2 || st2.Shutdown || st2.Dying {
				runs = nil
			}
		}
		v := FormatRuns(runs)
		if len(runs) == 0 {
			// stopped, or nothing read: the last list stands
		} else if len(v) > maxFramesValue {
			// Too long for one node: Domain M keeps the last list and its sweep.
			fmt.Fprintf(out, "follow: %d runs of frames (%d bytes) do not fit domainm/frames; left as it is\n", len(runs), len(v))
		} else if cur, err := xs.Read(home + "/frames"); err != nil && !errors.Is(err, xenstore.ErrNotFound) {
			return err
		} else if cur != v {
			if err := xs.Write(home+"/frames", v); err != nil {
				return err
			}
			fmt.Fprintf(out, "follow: domainm/frames %q -> %q\n", cur, v)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
