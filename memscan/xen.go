package memscan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/domainm/domainm/memscan/internal/privcmd"
)

// Xen is a Source over a Xen domain's memory, foreign-mapped read-only through
// /dev/xen/privcmd (IOCTL_PRIVCMD_MMAPBATCH_V2, pure-Go ioctls). The caller's domain
// needs privilege over the target: dom0, or a domU given it with XEN_DOMCTL_set_target
// plus the xenstore node /local/domain/SELF/target (without it a domU's privcmd refuses
// every call).
//
// Its ranges are the target's populated guest-physical frames as Xen's p2m reports
// them: every frame up to the domain's highest guest frame (XENMEM_maximum_gpfn, which
// the dom0 tool hands Domain M) is asked for once at open, and the frames Xen maps are
// the ranges. That set is the *map state*: Unmap releases every frame (prepare); Remap
// maps exactly the same frames of another domain id (resume at the destination) and
// fails if Xen refuses any of them; Refresh makes it follow the target's frames
// between migrations (xen_refresh.go).
type Xen struct {
	span   uint64 // frames 0..span-1 were asked for at open
	ranges []Range

	mu      sync.RWMutex
	domid   uint16
	m       xenMapping // nil while unmapped
	mapper  XenMapper  // nil: privcmd (xenMapRuns)
	refused uint64     // frames asked for at the last mapping that Xen refused
}

// xenMapping is what Xen needs of a privcmd.Mapping.
type xenMapping = XenMapping

// xenMapRuns maps runs of frames (privcmd.MapRuns; a seam for tests).
var xenMapRuns = func(domid uint16, span uint64, runs []privcmd.Run) (xenMapping, error) {
	m, err := privcmd.MapRuns(domid, span, runs)
	if err != nil {
		return nil, err
	}
	return m, nil
}

var _ Source = (*Xen)(nil)

const xenPage = 4096

// OpenXen maps the populated frames of domain domid up to frame maxGPFN. With maxGPFN
// 0 the highest frame is found by asking Xen (see probeXen): a Domain M that is a domU
// cannot ask XENMEM_maximum_gpfn itself (a domU's privcmd refuses raw hypercalls), and
// the dom0 tool's xenstore node may be missing.
func OpenXen(domid uint16, maxGPFN uint64) (*Xen, error) {
	if err := privcmd.Available(); err != nil {
		return nil, fmt.Errorf("xen:%d: %w", domid, err)
	}
	if maxGPFN >= 1<<35 {
		return nil, fmt.Errorf("xen:%d: highest guest frame %#x: want below 2^35", domid, maxGPFN)
	}
	var errs []int32
	var err error
	if maxGPFN == 0 {
		errs, err = probeXen(domid)
	} else {
		errs, err = xenProbe(domid, 0, maxGPFN+1)
	}
	if err != nil {
		return nil, fmt.Errorf("xen:%d: asking Xen for its frames: %w", domid, err)
	}
	ranges := xenRanges(errs)
	if len(ranges) == 0 {
		return nil, fmt.Errorf("xen:%d: Xen maps none of frames 0..%#x (no privilege over the domain, or it is gone)", domid, len(errs)-1)
	}
	x := &Xen{span: uint64(len(errs)), ranges: ranges}
	if err := x.Remap(domid); err != nil {
		return nil, err
	}
	return x, nil
}

// xenProbe asks Xen for frames start..start+count-1 (privcmd.ProbeFrom; a seam for tests).
var xenProbe = privcmd.ProbeFrom

const (
	// xenProbeLow frames (4 GiB) are always asked for: a PVH or HVM guest's RAM below
	// the MMIO hole and its special pages (console, xenstore, ...) just under 4 GiB.
	xenProbeLow = 1 << 20
	// xenProbeWindow frames (1 GiB) at a time above: the toolstack puts the rest of a
	// guest's RAM in one run from 4 GiB up, so the first window Xen maps nothing of ends it.
	xenProbeWindow = 1 << 18
	xenProbeMax    = 1 << 35
)

// probeXen asks Xen for the low 4 GiB of domid's frames, then for 1 GiB windows above
// until one has no mapped frame, and returns the results up to the highest mapped frame.
func probeXen(domid uint16) ([]int32, error) {
	errs, err := xenProbe(domid, 0, xenProbeLow)
	if err != nil {
		return nil, err
	}
	for uint64(len(errs)) < xenProbeMax {
		w, err := xenProbe(domid, uint64(len(errs)), xenProbeWindow)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(w, 0) {
			break
		}
		errs = append(errs, w...)
	}
	n := len(errs)
	for n > 0 && errs[n-1] != 0 {
		n--
	}
	if n == 0 {
		return errs, nil
	}
	return errs[:n], nil
}

// xenRanges turns per-frame mapping results (0 = mapped) into ranges of mapped frames.
func xenRanges(errs []int32) []Range {
	var rs []Range
	for i := 0; i < len(errs); {
		if errs[i] != 0 {
			i++
			continue
		}
		j := i
		for j < len(errs) && errs[j] == 0 {
			j++
		}
		rs = append(rs, Range{GPA: uint64(i) * xenPage, Size: uint64(j-i) * xenPage})
		i = j
	}
	return rs
}

// xenRuns turns ranges into runs of frames.
func xenRuns(rs []Range) []privcmd.Run {
	runs := make([]privcmd.Run, len(rs))
	for i, r := range rs {
		runs[i] = privcmd.Run{First: r.GPA / xenPage, Count: r.Size / xenPage}
	}
	return runs
}

// DomID returns the domain whose frames are (or were last) mapped.
func (x *Xen) DomID() uint16 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.domid
}

// Mapped reports whether the frames are mapped now.
func (x *Xen) Mapped() bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.m != nil
}

// Unmap releases every mapped frame and keeps the map state (which frames), so that
// Remap can map the same frames again. Reads fail with ErrClosed until then.
func (x *Xen) Unmap() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		return nil
	}
	err := x.m.Close()
	x.m = nil
	if err != nil {
		return fmt.Errorf("xen:%d: unmapping: %w", x.domid, err)
	}
	return nil
}

// Remap maps the frames of the map state of domain domid (the target's new id after a
// migration), replacing any current mapping. Every frame must map: a frame Xen refuses
// means the domain is not laid out as the one mapped before.
func (x *Xen) Remap(domid uint16) error {
	m, err := x.mapFn()(domid, x.span, x.ranges)
	if err != nil {
		return fmt.Errorf("xen:%d: mapping %d ranges: %w", domid, len(x.ranges), err)
	}
	errs := m.Errs()
	first, n := uint64(0), 0
	for _, r := range x.ranges {
		for f := r.GPA / xenPage; f < r.End()/xenPage; f++ {
			if errs[f] != 0 {
				if n == 0 {
					first = f
				}
				n++
			}
		}
	}
	if n > 0 {
		// which frames, as ranges (lab run 10 saw only the first: frame 0x10, EINVAL)
		var gone []string
		for _, r := range xenRanges(refusedErrs(errs, x.ranges)) {
			gone = append(gone, fmt.Sprintf("%#x+%#x", r.GPA/xenPage, r.Size/xenPage))
			if len(gone) == 16 {
				gone = append(gone, "...")
				break
			}
		}
		m.Close()
		return fmt.Errorf("xen:%d: %d frames refused though they were mapped before, the first %#x (errno %d); refused: %s: %w",
			domid, n, first, -errs[first], strings.Join(gone, " "), &GuestChangedError{Reason: "memory map differs"})
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m != nil {
		x.m.Close()
	}
	x.m, x.domid = m, domid
	return nil
}

// Ranges returns the mapped guest-physical ranges.
func (x *Xen) Ranges() []Range {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return append([]Range(nil), x.ranges...)
}

// locate finds the range of gpa; x.mu is held.
func (x *Xen) locate(gpa uint64, n int) (Range, error) {
	for _, r := range x.ranges {
		if gpa >= r.GPA && gpa < r.End() {
			if uint64(n) > r.End()-gpa {
				return r, fmt.Errorf("xen: %#x+%d: range ends at %#x: %w", gpa, n, r.End(), ErrOutOfRange)
			}
			return r, nil
		}
	}
	return Range{}, fmt.Errorf("xen: %#x: %w", gpa, ErrOutOfRange)
}

// ReadAt copies guest memory at gpa into p.
func (x *Xen) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 {
		return 0, fmt.Errorf("xen: negative address %#x: %w", gpa, ErrOutOfRange)
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	r, rerr := x.locate(uint64(gpa), len(p))
	if r.Size == 0 {
		return 0, rerr
	}
	n := min(uint64(len(p)), r.End()-uint64(gpa))
	if x.m == nil {
		return 0, ErrClosed
	}
	c, err := x.m.Copy(p[:n], uint64(gpa))
	if err != nil {
		return c, fmt.Errorf("xen:%d: reading %#x: %w", x.domid, gpa, err)
	}
	return c, rerr
}

// Close unmaps the domain's memory and forgets the map state's use.
func (x *Xen) Close() error { return x.Unmap() }

// OpenXenFrames maps the frames of ranges (page-aligned guest-physical ranges) of
// domain domid: the frames dom0 read from Xen's p2m of the domain (domainm-xen grant
// writes them to Domain M's xenstore node domainm/frames, see ParseXenFrames). Only
// these frames are asked for, so a guest of 128 MiB costs Xen about 32 Ki mapping
// calls instead of the million of a probe of the low 4 GiB (a domU's privcmd makes
// one hypercall per frame, and under nested emulation each is dear). Frames Xen
// refuses are left out of the map state, as in OpenXen.
func OpenXenFrames(domid uint16, ranges []Range) (*Xen, error) {
	if err := privcmd.Available(); err != nil {
		return nil, fmt.Errorf("xen:%d: %w", domid, err)
	}
	return OpenXenFramesWith(nil, domid, ranges)
}

// OpenXenFramesWith is OpenXenFrames with the frames mapped by mapper instead of
// privcmd (nil: privcmd): a fake p2m in tests of the code that uses a Xen source.
func OpenXenFramesWith(mapper XenMapper, domid uint16, ranges []Range) (*Xen, error) {
	x := &Xen{mapper: mapper}
	span, m, mapped, err := xenMapFrames(x.mapFn(), domid, ranges)
	if err != nil {
		return nil, err
	}
	x.span, x.ranges, x.domid, x.m = span, mapped, domid, m
	x.refused = TotalSize(ranges)/xenPage - TotalSize(mapped)/xenPage
	return x, nil
}

// xenMapFrames maps the frames of ranges of domain domid and returns the span, the
// mapping and the ranges Xen mapped (frames it refuses are left out); it fails if Xen
// maps none.
func xenMapFrames(mapRanges XenMapper, domid uint16, ranges []Range) (uint64, xenMapping, []Range, error) {
	if len(ranges) == 0 {
		return 0, nil, nil, fmt.Errorf("xen:%d: no frames to map", domid)
	}
	var span uint64
	for i, r := range ranges {
		if r.GPA%xenPage != 0 || r.Size%xenPage != 0 || r.Size == 0 {
			return 0, nil, nil, fmt.Errorf("xen:%d: range %#x+%#x is not whole frames", domid, r.GPA, r.Size)
		}
		if i > 0 && r.GPA < ranges[i-1].End() {
			return 0, nil, nil, fmt.Errorf("xen:%d: ranges not in order or overlapping at %#x", domid, r.GPA)
		}
		span = r.End() / xenPage
	}
	if span >= xenProbeMax {
		return 0, nil, nil, fmt.Errorf("xen:%d: frame %#x: want below 2^35", domid, span-1)
	}
	m, err := mapRanges(domid, span, ranges)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("xen:%d: mapping %d ranges: %w", domid, len(ranges), err)
	}
	mapped := xenRanges(m.Errs())
	if len(mapped) == 0 {
		errs := xenErrnos(m.Errs(), ranges)
		m.Close()
		return 0, nil, nil, fmt.Errorf("xen:%d: Xen maps none of the %d ranges (frames by errno: %s; EPERM: no privilege over the domain, or a PVH/HVM caller on a Xen before 4.19)", domid, len(ranges), errs)
	}
	return span, m, mapped, nil
}

// RemapFrames maps the frames of ranges of domain domid (the target's new id after a
// migration, ranges being the frames dom0 read from Xen's p2m there: domainm/frames as
// the destination's grant wrote it), replacing the mapping and the map state, and
// reports how the frames differ from the map state before. Frames Xen refuses are left
// out, as in OpenXenFrames. A restored domain need not hold every frame it held at the
// source (lab run 10: the target, still paused at the destination, lacked frame 0x10
// of the source's list), so a frame that is gone is no error here: the caller judges
// the change (XenFrameChange.Check) and checks the fingerprint over the frames present
// at both (CheckFingerprintPresent).
func (x *Xen) RemapFrames(domid uint16, ranges []Range) (XenFrameChange, error) {
	span, m, mapped, err := xenMapFrames(x.mapFn(), domid, ranges)
	if err != nil {
		return XenFrameChange{}, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	c := xenChange(x.ranges, mapped)
	c.Refused = TotalSize(ranges)/xenPage - c.After
	if x.m != nil {
		x.m.Close()
	}
	x.m, x.domid, x.span, x.ranges, x.refused = m, domid, span, mapped, c.Refused
	return c, nil
}

// XenFrameChange is how the frames mapped by a RemapFrames differ from those mapped
// before it.
type XenFrameChange struct {
	Before, After uint64  // frames mapped before and now
	Lost, Gained  []Range // mapped before and not now; mapped now and not before
	Refused       uint64  // frames of the new list that Xen refused
}

// LostFrames is the number of frames mapped before and not now.
func (c XenFrameChange) LostFrames() uint64 { return TotalSize(c.Lost) / xenPage }

// GainedFrames is the number of frames mapped now and not before.
func (c XenFrameChange) GainedFrames() uint64 { return TotalSize(c.Gained) / xenPage }

func (c XenFrameChange) String() string {
	runs := func(rs []Range) string {
		if len(rs) == 0 {
			return "none"
		}
		var s []string
		for i, r := range rs {
			if i == 16 {
				s = append(s, fmt.Sprintf("... (%d runs)", len(rs)))
				break
			}
			s = append(s, fmt.Sprintf("%#x+%#x", r.GPA/xenPage, r.Size/xenPage))
		}
		return strings.Join(s, " ")
	}
	return fmt.Sprintf("frames %d -> %d: %d gone (%s), %d new (%s), %d refused by Xen",
		c.Before, c.After, c.LostFrames(), runs(c.Lost), c.GainedFrames(), runs(c.Gained), c.Refused)
}

// XenMigrationSlack is the share of a domain's frames (1/32) by which its frame set may
// change across a migration, with at least XenMigrationMinSlack frames either way: the
// guest's own remappings over RAM frames (grant-table frames, shared info, ballooning)
// between the source's list and its suspend, which a restored domain that has not run
// yet lacks, and the toolstack's special pages.
const (
	XenMigrationSlack    = 32
	XenMigrationMinSlack = 256
)

// Check reports a frame set that changed beyond what a migration explains: more frames
// gone, or new, than XenMigrationSlack allows. The error names the change.
func (c XenFrameChange) Check() error {
	limit := max(c.Before/XenMigrationSlack, XenMigrationMinSlack)
	if c.LostFrames() > limit || c.GainedFrames() > limit {
		return &GuestChangedError{Reason: fmt.Sprintf("frame set changed beyond a migration (at most %d frames either way): %v", limit, c)}
	}
	return nil
}

// xenChange compares two sets of frames, each as ordered ranges.
func xenChange(before, after []Range) XenFrameChange {
	return XenFrameChange{
		Before: TotalSize(before) / xenPage, After: TotalSize(after) / xenPage,
		Lost: rangesMinus(before, after), Gained: rangesMinus(after, before),
	}
}

// rangesMinus returns the parts of ordered, non-overlapping ranges a not in b.
func rangesMinus(a, b []Range) []Range {
	var out []Range
	j := 0
	for _, r := range a {
		start, end := r.GPA, r.End()
		for j < len(b) && b[j].End() <= start {
			j++
		}
		for k := j; k < len(b) && b[k].GPA < end && start < end; k++ {
			if b[k].GPA > start {
				out = append(out, Range{GPA: start, Size: b[k].GPA - start})
			}
			start = max(start, b[k].End())
		}
		if start < end {
			out = append(out, Range{GPA: start, Size: end - start})
		}
	}
	return out
}

// FingerprintCheck is a fingerprint compared over the sampled pages a source holds.
type FingerprintCheck struct {
	Compared int      // sampled pages present in the source and compared
	Absent   []uint64 // sampled pages (guest-physical) the source lacks
	Differ   []uint64 // compared pages whose contents differ
}

func (c FingerprintCheck) String() string {
	return fmt.Sprintf("%d sampled pages compared, %d differ, %d absent", c.Compared, len(c.Differ), len(c.Absent))
}

// CheckFingerprintPresent compares fp's sampled pages that lie in src's ranges with
// src's pages, and lists those that lie outside (unlike Fingerprint.Verify, which wants
// the same layout): after a Xen migration the restored domain may lack a few frames
// the source had (see RemapFrames), which say nothing about its identity by
// themselves. The caller judges the counts.
func CheckFingerprintPresent(fp Fingerprint, src Source) (FingerprintCheck, error) {
	var c FingerprintCheck
	ranges := src.Ranges()
	page := make([]byte, pageSize)
	for _, p := range fp.Pages {
		in := false
		for _, r := range ranges {
			if p.GPA >= r.GPA && p.GPA+pageSize <= r.End() {
				in = true
				break
			}
		}
		if !in {
			c.Absent = append(c.Absent, p.GPA)
			continue
		}
		if _, err := src.ReadAt(page, int64(p.GPA)); err != nil {
			return c, fmt.Errorf("reading page %#x: %w", p.GPA, err)
		}
		c.Compared++
		if hashPage(page) != p.Hash {
			c.Differ = append(c.Differ, p.GPA)
		}
	}
	return c, nil
}

// VerifyMigrated is Verify for a Xen source at a migration's destination, whose
// frames may differ from those fingerprinted at the source (lab run 10: the restored
// target lacked a frame the guest had given back to Xen after dom0 listed them). It
// decides by the fingerprint over the sampled pages present at both: at least half of
// them must be present, and at most one compared page may differ (one Xen itself
// writes in guest RAM, such as a vcpu_info area); more is another guest
// (ErrGuestChanged). It returns how the frame set changed and what the fingerprint
// showed, for the caller's log; a frame set changed beyond a migration
// (XenFrameChange.Check) is named there, not refused: frames gone say nothing of the
// guest's identity by themselves.
func (fp Fingerprint) VerifyMigrated(src Source) (XenFrameChange, FingerprintCheck, error) {
	ranges, err := normalize(src.Ranges())
	if err != nil {
		return XenFrameChange{}, FingerprintCheck{}, err
	}
	change := xenChange(fp.Ranges, ranges)
	fc, err := CheckFingerprintPresent(fp, src)
	switch {
	case err != nil:
		return change, fc, err
	case fc.Compared < len(fp.Pages)/2:
		return change, fc, &GuestChangedError{Reason: fmt.Sprintf("only %d of %d sampled pages are present (%v)", fc.Compared, len(fp.Pages), change)}
	case len(fc.Differ) > 1:
		return change, fc, &GuestChangedError{Reason: fmt.Sprintf("%d of %d compared sampled pages differ (%#x)", len(fc.Differ), fc.Compared, fc.Differ)}
	}
	return change, fc, nil
}

// ParseXenFrames parses runs of guest frames written as "FIRST+COUNT" (hexadecimal
// with 0x, or decimal) separated by spaces, as domainm-xen writes Xen's p2m of the
// target into domainm/frames, into guest-physical ranges.
func ParseXenFrames(s string) ([]Range, error) {
	var rs []Range
	for _, f := range strings.Fields(s) {
		a, b, ok := strings.Cut(f, "+")
		first, err1 := strconv.ParseUint(a, 0, 64)
		count, err2 := strconv.ParseUint(b, 0, 64)
		if !ok || err1 != nil || err2 != nil || count == 0 || first >= xenProbeMax || count > xenProbeMax-first {
			return nil, fmt.Errorf("xen frames: bad run %q (want FIRST+COUNT)", f)
		}
		r := Range{GPA: first * xenPage, Size: count * xenPage}
		if len(rs) > 0 && r.GPA < rs[len(rs)-1].End() {
			return nil, fmt.Errorf("xen frames: run %q not after the one before", f)
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("xen frames: none in %q", s)
	}
	return rs, nil
}

// xenErrnos counts the per-frame results of the frames of ranges by errno ("1:32785").
func xenErrnos(errs []int32, ranges []Range) string {
	n := map[int32]int{}
	for _, r := range ranges {
		for f := r.GPA / xenPage; f < r.End()/xenPage && f < uint64(len(errs)); f++ {
			n[-errs[f]]++
		}
	}
	keys := make([]int32, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%d", k, n[k])
	}
	return b.String()
}

// refusedErrs is 0 for each frame of ranges that errs refused and -1 elsewhere, so that
// xenRanges lists the refused frames.
func refusedErrs(errs []int32, ranges []Range) []int32 {
	out := make([]int32, len(errs))
	for i := range out {
		out[i] = -1
	}
	for _, r := range ranges {
		for f := r.GPA / xenPage; f < r.End()/xenPage && f < uint64(len(errs)); f++ {
			if errs[f] != 0 {
				out[f] = 0
			}
		}
	}
	return out
}
