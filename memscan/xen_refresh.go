package memscan

import (
	"fmt"
	"slices"
)

// XenMapping is a foreign mapping of some of a domain's frames, each at its
// guest-physical offset in one address range (privcmd.Mapping).
type XenMapping interface {
	// Errs is the result per frame of the range: 0 mapped, else -errno (a frame not
	// asked for is not 0).
	Errs() []int32
	Copy(dst []byte, gpa uint64) (int, error)
	Close() error
}

// XenMapper maps the frames of ranges (page-aligned, in order, all below span frames)
// of domain domid: privcmd on Xen, a fake p2m in tests of code that uses a Xen source.
type XenMapper func(domid uint16, span uint64, ranges []Range) (XenMapping, error)

// mapFn is the mapper of x: its own, or privcmd's (through the xenMapRuns seam).
func (x *Xen) mapFn() XenMapper {
	if x.mapper != nil {
		return x.mapper
	}
	return func(domid uint16, span uint64, ranges []Range) (XenMapping, error) {
		return xenMapRuns(domid, span, xenRuns(ranges))
	}
}

// Refused is how many frames Xen refused of those asked for at the last mapping
// (open, RemapFrames, Refresh): listed or probed frames that are not the target's
// memory now.
func (x *Xen) Refused() uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.refused
}

// Refresh makes the map state follow the target between migrations. The target's
// kernel changes its frames at will: it gives frames back to Xen (ballooning down,
// XENMEM_decrease_reservation) and populates others (ballooning up,
// XENMEM_populate_physmap at any free frame number below Xen's limit), so a map state
// fixed at open is blind to every frame populated after it, and keeps a frame given
// back mapped to the page it had (which Xen then no longer gives the guest).
//
// Refresh maps the frames of the map state and of candidates (page-aligned ranges:
// dom0's current list of the target's frames, frames the caller sweeps for new ones)
// anew, in one batch as the open did, and swaps the new mapping in: frames Xen maps
// now join the map state, frames it refuses now leave it. Every frame is mapped anew
// rather than only the changed ones: a frame number the guest gave back and populated
// again is backed by another page, which only a new mapping of it shows (the old one
// keeps the old page), and asking Xen whether a frame is populated costs the same
// mapping call as mapping it (OpenXen's probe maps frames into a scratch mapping).
// The frames it refused are counted (XenFrameChange.Refused), not kept: they are asked
// for again only if the caller lists them again.
//
// It fails, keeping the current mapping, while the source is unmapped (prepare) or
// when Xen maps none of the frames (the domain is gone: the caller's liveness check
// says so). Refresh must not run concurrently with reads that must see one mapping
// throughout (run it between passes).
func (x *Xen) Refresh(candidates []Range) (XenFrameChange, error) {
	c, _, err := x.RefreshIf(candidates, nil)
	return c, err
}

// RefreshIf is Refresh that swaps the new mapping in only if keep (nil: always)
// accepts the change; otherwise the new mapping is dropped, the map state stays as it
// was, and kept is false. The caller's reason: frames refused because the domain is
// being destroyed (a migration's end: xl destroys the source domain) are not frames
// the guest gave back, and dropping them from the map state would lose the pages a
// prepare must still fingerprint.
func (x *Xen) RefreshIf(candidates []Range, keep func(XenFrameChange) bool) (c XenFrameChange, kept bool, err error) {
	x.mu.RLock()
	domid, cur, mapped := x.domid, x.ranges, x.m != nil
	x.mu.RUnlock()
	if !mapped {
		return XenFrameChange{}, false, fmt.Errorf("xen:%d: refreshing the frames: %w", domid, ErrClosed)
	}
	ask, err := rangesUnion(cur, candidates)
	if err != nil {
		return XenFrameChange{}, false, fmt.Errorf("xen:%d: refreshing the frames: %w", domid, err)
	}
	span, m, got, err := xenMapFrames(x.mapFn(), domid, ask)
	if err != nil {
		return XenFrameChange{}, false, err
	}
	c = xenChange(cur, got)
	c.Refused = TotalSize(ask)/xenPage - c.After
	if keep != nil && !keep(c) {
		m.Close()
		return c, false, nil
	}
	x.mu.Lock()
	old := x.m
	x.m, x.span, x.ranges, x.refused = m, span, got, c.Refused
	x.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return c, true, nil
}

// Changed reports whether the frame set changed.
func (c XenFrameChange) Changed() bool { return len(c.Lost) > 0 || len(c.Gained) > 0 }

// rangesUnion merges ordered ranges a with page-aligned ranges b in any order into
// ordered, non-overlapping ranges, adjacent ones joined.
func rangesUnion(a, b []Range) ([]Range, error) {
	all := make([]Range, 0, len(a)+len(b))
	for _, r := range append(append(all, a...), b...) {
		if r.GPA%xenPage != 0 || r.Size%xenPage != 0 {
			return nil, fmt.Errorf("range %#x+%#x is not whole frames", r.GPA, r.Size)
		}
		if r.Size > 0 {
			all = append(all, r)
		}
	}
	slices.SortFunc(all, func(p, q Range) int {
		switch {
		case p.GPA < q.GPA:
			return -1
		case p.GPA > q.GPA:
			return 1
		}
		return 0
	})
	var out []Range
	for _, r := range all {
		if n := len(out); n > 0 && r.GPA <= out[n-1].End() {
			if r.End() > out[n-1].End() {
				out[n-1].Size = r.End() - out[n-1].GPA
			}
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// XenSweep chooses, for each Refresh, a window of frame numbers to ask Xen about that
// no list names: the frames a guest may populate where neither the map state nor
// dom0's list looks. Windows of Window frames follow each other over frames
// 0..Limit-1 and start again at 0 (the part of a window the map state covers costs
// nothing more: it is asked for anyway), so one sweep of the low 4 GiB (XenSweepLimit)
// at the default window takes 256 refreshes. Frames
// above Limit are not swept (a guest may populate up to Xen's limit, 2^35 frames and
// more, far more than can be asked for).
type XenSweep struct {
	Window uint64 // frames per refresh (XenSweepWindow when 0)
	Limit  uint64 // frames swept: 0..Limit-1 (XenSweepLimit when 0)
	next   uint64
	rounds int // sweeps completed
}

const (
	// XenSweepWindow frames (16 MiB) are swept per refresh: a frame Xen refuses costs
	// a domU's privcmd a hypercall of its own, about 16 times a mapped frame's share.
	XenSweepWindow = 4096
	// XenSweepLimit: the low 4 GiB of frames (a PVH or HVM guest's RAM below the MMIO
	// hole, the hole itself, the special pages just under 4 GiB).
	XenSweepLimit = xenProbeLow
)

// Next returns the next window, whole frames as a guest-physical range, and advances.
// A limit below the map state's highest frame is raised to it, so that the holes
// between the guest's frames are swept too.
func (s *XenSweep) Next(mapped []Range) Range {
	w, limit := s.Window, s.Limit
	if w == 0 {
		w = XenSweepWindow
	}
	if limit == 0 {
		limit = XenSweepLimit
	}
	if n := len(mapped); n > 0 {
		limit = max(limit, mapped[n-1].End()/xenPage)
	}
	if s.next >= limit {
		s.next = 0
		s.rounds++
	}
	first := s.next
	s.next = min(first+w, limit)
	return Range{GPA: first * xenPage, Size: (s.next - first) * xenPage}
}

// Rounds is how many sweeps of frames 0..Limit-1 were completed.
func (s *XenSweep) Rounds() int { return s.rounds }
