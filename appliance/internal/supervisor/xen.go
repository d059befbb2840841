package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/control/xenstore"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/memscan"
)

// XenStore is what the supervisor asks of xenstore for a xen:DOMID source (a
// *xenstore.Client): whether the target's domain exists, dom0's list of its frames,
// and where Domain M reports its remap and its mapped frames.
type XenStore interface {
	Read(path string) (string, error)
	Write(path, value string) error
	Close() error
}

func openXenstore() (XenStore, error) {
	c, err := xenstore.Open()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// xenConn is the supervisor's one xenstore connection for its xen: source, opened when
// first needed and kept (the liveness question runs before every pass). A call that
// fails for the connection itself (not an answer such as ENOENT or EACCES) closes it,
// and is tried once more on a new one.
type xenConn struct {
	open  func() (XenStore, error)
	mu    sync.Mutex
	c     XenStore
	opens int // connections opened (tests)
}

func (x *xenConn) do(f func(XenStore) error) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for try := 0; ; try++ {
		if x.c == nil {
			c, err := x.open()
			if err != nil {
				return err
			}
			x.c = c
			x.opens++
		}
		err := f(x.c)
		var xe *xenstore.Error
		if err == nil || errors.Is(err, xenstore.ErrNotFound) || errors.As(err, &xe) {
			return err
		}
		x.c.Close()
		x.c = nil
		if try == 1 {
			return err
		}
	}
}

func (x *xenConn) read(path string) (v string, err error) {
	err = x.do(func(c XenStore) error { v, err = c.Read(path); return err })
	return v, err
}

func (x *xenConn) write(path, value string) error {
	return x.do(func(c XenStore) error { return c.Write(path, value) })
}

func (x *xenConn) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.c != nil {
		x.c.Close()
		x.c = nil
	}
}

// xenDomainAlive asks xenstore whether domain domid still exists: the toolstack
// removes /local/domain/DOMID when it destroys a domain, and domainm-xen grant gave
// Domain M the target's privilege over its nodes (XS_SET_TARGET). An answer other than
// "no such node" is an error: the caller then cannot tell and keeps monitoring.
func (s *Supervisor) xenDomainAlive(domid uint16) (bool, error) {
	_, err := s.xen.read(fmt.Sprintf("/local/domain/%d/domid", domid))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, xenstore.ErrNotFound):
		return false, nil
	}
	return false, err
}

// Xen nodes of Domain M's own subtree (relative paths: under /local/domain/SELF).
const (
	xenNodeTarget = "domainm/target" // the target's domain id (grant)
	xenNodeFrames = "domainm/frames" // Xen's p2m of the target as dom0 read it (grant)
	// xenNodeRemap: what the last resume remapped, as the lab's agent writes it
	// (migrate --xen's Result.Remap).
	xenNodeRemap = "domainm/remap"
	// xenNodeMapped: the frames Domain M maps now (decimal), written at the first
	// refresh and when they change: dom0 can compare it with the target's page count
	// and rewrite domainm/frames when they differ.
	xenNodeMapped = "domainm/mapped-frames"
)

// xenRefresher is a memory source whose frames follow the target (memscan.Xen).
type xenRefresher interface {
	RefreshIf(candidates []memscan.Range, keep func(memscan.XenFrameChange) bool) (memscan.XenFrameChange, bool, error)
	Ranges() []memscan.Range
}

// frameNote is what a refresh of a xen: source's frames before a pass did.
type frameNote struct {
	ran    bool
	change memscan.XenFrameChange
	took   time.Duration
	sweep  memscan.Range // the window of frames no list names that was asked for
	listed bool          // dom0's list was among the candidates
	// declined: frames were lost and the domain no longer exists: the change was not
	// taken (a domain being destroyed, not a guest giving frames back)
	declined bool
	err      error
}

// xenSweepDefault is each memory loop's sweep (tests make it small).
var xenSweepDefault memscan.XenSweep

// xenRefreshSpacing bounds the time refreshes take: a refresh that took d is followed
// by the next at the first pass d*xenRefreshSpacing after its start or later. Mapping
// costs a PV Domain M one hypercall per 16 frames the target has and one per frame it
// does not have (Linux's privcmd ends an mmu_update batch at a refused frame): a 128
// MiB target with the sweep's 4096 frames, about 6,100 hypercalls, a few ms on
// hardware; in the nested lab (32785 frames mapped in 2.8-10.3 s) several seconds, so
// there every few passes of its 10 s interval.
const xenRefreshSpacing = 10

// refreshFrames makes a xen: source's map state follow the target before a pass
// (memscan.Xen.Refresh): its frames now, dom0's list as domainm/frames holds it now
// (rewritten by dom0 or not) and the next window of the sweep. Run in the pass's
// goroutine: no other pass runs, and the loop stays responsive meanwhile.
// A prepare that arrives meanwhile waits for the refresh to end (it cannot be cut
// short: the mapping is one privcmd call sequence): by the estimate above a few ms on
// hardware, seconds in the nested lab.
//
// Frames lost while the domain no longer exists (alive, asked after the mapping) are
// not taken: xl destroys a migrated target's source domain before the coordinator's
// prepare can arrive, and Xen refuses a dying domain's frames as it frees them (lab
// run 22: 27665 of 32785 refused, a false frames-changed alert, and a prepare that
// fingerprinted the 5120 left). The map state keeps holding the old pages; the liveness
// check before the next pass sees the domain gone.
func (m *memLoop) refreshFrames(src xenRefresher, domid int, alive func(uint16) (bool, error)) frameNote {
	var n frameNote
	n.ran = true
	t0 := time.Now()
	var cand []memscan.Range
	if rs := m.s.xenList(domid); rs != nil {
		cand, n.listed = rs, true
	}
	n.sweep = m.sweep.Next(src.Ranges())
	cand = append(cand, n.sweep)
	keep := func(c memscan.XenFrameChange) bool {
		if len(c.Lost) == 0 || alive == nil {
			return true
		}
		ok, err := alive(uint16(domid))
		return err != nil || ok // unknown: taken, as before
	}
	var kept bool
	n.change, kept, n.err = src.RefreshIf(cand, keep)
	n.declined = n.err == nil && !kept
	n.took = time.Since(t0)
	return n
}

// xenList returns dom0's list of domid's frames (domainm/frames), or nil when there is
// none for this domain.
func (s *Supervisor) xenList(domid int) []memscan.Range {
	t, err := s.xen.read(xenNodeTarget)
	if err != nil || t != strconv.Itoa(domid) {
		return nil
	}
	v, err := s.xen.read(xenNodeFrames)
	if err != nil {
		return nil
	}
	rs, err := memscan.ParseXenFrames(v)
	if err != nil {
		return nil
	}
	return rs
}

// framesNoted handles a refresh's outcome, in the loop: a change in the target's
// frames outside a migration is alerted (once per change: the next refresh compares
// with the new map state), and the new frames were scanned by the pass that followed.
func (m *memLoop) framesNoted(n frameNote, started time.Time) {
	if !n.ran {
		return
	}
	// The next refresh is due before the first pass xenRefreshSpacing times its cost
	// after this one's start: refreshing takes at most about 1/xenRefreshSpacing of
	// the time (every pass on hardware, every few in the nested lab).
	m.refreshAt = started.Add(xenRefreshSpacing * n.took)
	if n.err != nil {
		if msg := n.err.Error(); msg != m.refreshErr {
			m.s.log.Warn("cannot refresh the target's Xen frames; scanning those mapped before", "source", m.file.spec, "err", n.err)
			m.refreshErr = msg
		}
		return
	}
	m.refreshErr = ""
	c := n.change
	if n.declined {
		m.s.log.Warn("the target's Xen frames were refused while its domain no longer exists: change not taken, the mapping kept",
			"source", m.file.spec, "domid", m.file.domid, "frames", c.Before, "would_be", c.After, "refused", c.Refused)
		return
	}
	// One line per refresh, at Info (Warn when the frames changed): how often refreshes
	// run and what they cost is what the nested lab looks at.
	lvl, msg := slog.LevelInfo, "xen frames refreshed"
	if c.Changed() {
		lvl, msg = slog.LevelWarn, "the target's Xen frames changed"
	}
	m.s.log.Log(context.Background(), lvl, msg, "source", m.file.spec, "domid", m.file.domid,
		"took", n.took.Round(time.Microsecond), "frames", c.After, "gained", c.GainedFrames(), "lost", c.LostFrames(),
		"refused", c.Refused, "change", c.String(), "sweep",
		fmt.Sprintf("%#x+%#x", n.sweep.GPA/memscan.PageSize, n.sweep.Size/memscan.PageSize), "listed", n.listed,
		"next_in", (xenRefreshSpacing * n.took).Round(time.Millisecond))
	if c.After != m.mappedNoted {
		if err := m.s.xen.write(xenNodeMapped, strconv.FormatUint(c.After, 10)); err != nil {
			m.s.log.Debug("cannot write domainm/mapped-frames", "err", err)
		} else {
			m.mappedNoted = c.After
		}
	}
	if !c.Changed() {
		return
	}
	m.s.emit(alert.Health(m.s.clk.Now(), alert.SevMedium, "memory-source", "frames-changed",
		fmt.Sprintf("the frames of %s (%s) changed outside a migration (ballooning, or the guest's kernel giving back and populating frames): %v (refused: frames asked for that the target does not have now, among its frames before, dom0's list and the sweep's window %#x+%#x); new frames are scanned from this pass on, those given back are no longer mapped",
			m.s.currentTarget().Name, m.file.spec, c, n.sweep.GPA/memscan.PageSize, n.sweep.Size/memscan.PageSize)))
}

// gainedBelow reports whether c gained frames below guest-physical address at.
func gainedBelow(c memscan.XenFrameChange, at uint64) bool {
	return len(c.Gained) > 0 && c.Gained[0].GPA < at
}
