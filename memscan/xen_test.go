package memscan

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/domainm/domainm/memscan/internal/privcmd"
)

func TestXenNotAvailable(t *testing.T) {
	_, err := Open("xen:1", OpenOptions{XenMaxGPFN: 64 << 8})
	if !errors.Is(err, privcmd.ErrNoXen) {
		t.Fatalf("Open(xen:1) = %v, want the no-privcmd error", err)
	}
	t.Logf("error text: %v", err)
	// Without the highest frame (what the supervisor passes for xen:DOMID from its
	// config) Open goes on to probe Xen: here it fails only for the missing device.
	if _, err := Open("xen:1", OpenOptions{}); !errors.Is(err, privcmd.ErrNoXen) {
		t.Fatalf("Open(xen:1) without XenMaxGPFN = %v, want the no-privcmd error", err)
	}
}

func TestXenRanges(t *testing.T) {
	errs := []int32{0, 0, -22, -22, 0, -2, 0, 0, 0}
	want := []Range{{0, 2 * xenPage}, {4 * xenPage, xenPage}, {6 * xenPage, 3 * xenPage}}
	if got := xenRanges(errs); !reflect.DeepEqual(got, want) {
		t.Fatalf("xenRanges = %v, want %v", got, want)
	}
	if got := xenRanges([]int32{-1, -1}); got != nil {
		t.Fatalf("all holes: %v", got)
	}
}

func TestXenRuns(t *testing.T) {
	rs := []Range{{0, 2 * xenPage}, {4 * xenPage, xenPage}, {0xfeff0 * xenPage, 3 * xenPage}}
	runs := xenRuns(rs)
	want := []privcmd.Run{{First: 0, Count: 2}, {First: 4, Count: 1}, {First: 0xfeff0, Count: 3}}
	if !reflect.DeepEqual(runs, want) {
		t.Fatalf("xenRuns = %v, want %v", runs, want)
	}
}

// fakeP2M answers xenProbe like Xen for a domain whose populated frames are runs.
func fakeP2M(t *testing.T, runs []privcmd.Run, calls *[][2]uint64) func(uint16, uint64, uint64) ([]int32, error) {
	return func(domid uint16, start, count uint64) ([]int32, error) {
		if domid != 7 {
			t.Errorf("probe of domain %d, want 7", domid)
		}
		*calls = append(*calls, [2]uint64{start, count})
		errs := make([]int32, count)
		for i := range errs {
			errs[i] = -22
			f := start + uint64(i)
			for _, r := range runs {
				if f >= r.First && f < r.First+r.Count {
					errs[i] = 0
				}
			}
		}
		return errs, nil
	}
}

// TestProbeXen: without the highest frame, the frames Xen maps are found by asking for
// the low 4 GiB and then 1 GiB windows until one is empty: a PVH guest's RAM and special
// pages under 4 GiB, and an HVM-like guest's RAM continued above 4 GiB.
func TestProbeXen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		runs  []privcmd.Run
		calls int
	}{
		{"pvh-128M", []privcmd.Run{{First: 0, Count: 0x8000}, {First: 0xfeff0, Count: 8}}, 2},
		{"ram-above-4G", []privcmd.Run{{First: 0, Count: 0xc0000}, {First: 0xfeff0, Count: 8}, {First: 0x100000, Count: 0x50000}}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls [][2]uint64
			defer func(p func(uint16, uint64, uint64) ([]int32, error)) { xenProbe = p }(xenProbe)
			xenProbe = fakeP2M(t, tc.runs, &calls)
			errs, err := probeXen(7)
			if err != nil {
				t.Fatal(err)
			}
			last := tc.runs[len(tc.runs)-1]
			if want := last.First + last.Count; uint64(len(errs)) != want {
				t.Errorf("span %#x frames, want %#x (highest mapped frame + 1)", len(errs), want)
			}
			var want []Range
			for _, r := range tc.runs {
				want = append(want, Range{GPA: r.First * xenPage, Size: r.Count * xenPage})
			}
			if got := xenRanges(errs); !reflect.DeepEqual(got, want) {
				t.Errorf("ranges %v, want %v", got, want)
			}
			if len(calls) != tc.calls || calls[0] != [2]uint64{0, xenProbeLow} {
				t.Errorf("probes %v: want %d, the first of the low 4 GiB", calls, tc.calls)
			}
		})
	}
}

func TestParseXenFrames(t *testing.T) {
	got, err := ParseXenFrames("0x0+0x8000 0xfeff0+0x10")
	want := []Range{{0, 0x8000 * xenPage}, {0xfeff0 * xenPage, 0x10 * xenPage}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseXenFrames = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"", "0x10", "0x10+0", "0x10+x", "0x20+1 0x10+1", "0x0+0x10 0x8+1", "0x7ffffffff+2"} {
		if rs, err := ParseXenFrames(bad); err == nil {
			t.Errorf("ParseXenFrames(%q) = %v, want an error", bad, rs)
		}
	}
}

func TestOpenXenFramesNotAvailable(t *testing.T) {
	if _, err := OpenXenFrames(1, []Range{{0, xenPage}}); !errors.Is(err, privcmd.ErrNoXen) {
		t.Fatalf("OpenXenFrames = %v, want the no-privcmd error", err)
	}
}

func TestXenErrnos(t *testing.T) {
	errs := []int32{0, -1, -1, -22, 0, -1}
	if got := xenErrnos(errs, []Range{{0, 4 * xenPage}, {5 * xenPage, xenPage}}); got != "0:1 1:3 22:1" {
		t.Fatalf("xenErrnos = %q", got)
	}
}

func TestRefusedErrs(t *testing.T) {
	errs := []int32{0, 0, -22, -22, 0, -1, 0, -22}
	got := xenRanges(refusedErrs(errs, []Range{{0, 6 * xenPage}}))
	want := []Range{{2 * xenPage, 2 * xenPage}, {5 * xenPage, xenPage}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("refused ranges %v, want %v (frame 7 is outside the map state)", got, want)
	}
}

// fakeDomain is a domain in a fake p2m: its populated frames and a seed for their
// contents (the same seed is the same guest).
type fakeDomain struct {
	frames []Range
	seed   byte
	dirty  map[uint64]bool // frames whose bytes differ from the seed's (a page rewritten)
}

func (d fakeDomain) has(f uint64) bool {
	for _, r := range d.frames {
		if f*xenPage >= r.GPA && f*xenPage < r.End() {
			return true
		}
	}
	return false
}

// fakeMapping maps a fakeDomain's frames as privcmd does: per-frame results, and a
// read of a frame that did not map fails.
type fakeMapping struct {
	d      fakeDomain
	errs   []int32
	closed *int
}

func (m *fakeMapping) Errs() []int32 { return m.errs }
func (m *fakeMapping) Close() error  { *m.closed++; return nil }
func (m *fakeMapping) Copy(dst []byte, gpa uint64) (int, error) {
	for i := range dst {
		a := gpa + uint64(i)
		if f := a / xenPage; f >= uint64(len(m.errs)) || m.errs[f] != 0 {
			return i, errors.New("fault")
		}
		dst[i] = byte(a/xenPage) ^ byte(a%251) ^ m.d.seed | 1
		if m.d.dirty[a/xenPage] {
			dst[i] ^= 0x80
		}
	}
	return len(dst), nil
}

// useFakeP2M makes xenMapRuns map the domains of p2m by id; it returns the count of
// closed mappings.
func useFakeP2M(t testing.TB, p2m map[uint16]fakeDomain) *int {
	closed := new(int)
	old := xenMapRuns
	t.Cleanup(func() { xenMapRuns = old })
	xenMapRuns = func(domid uint16, span uint64, runs []privcmd.Run) (xenMapping, error) {
		d, ok := p2m[domid]
		if !ok {
			return nil, errors.New("no such domain")
		}
		m := &fakeMapping{d: d, errs: make([]int32, span), closed: closed}
		for i := range m.errs {
			m.errs[i] = -2
		}
		for _, r := range runs {
			for f := r.First; f < r.First+r.Count; f++ {
				m.errs[f] = -22
				if d.has(f) {
					m.errs[f] = 0
				}
			}
		}
		return m, nil
	}
	return closed
}

func frames(s string) []Range {
	rs, err := ParseXenFrames(s)
	if err != nil {
		panic(err)
	}
	return rs
}

// TestRemapFramesAfterMigration is lab run 10's resume: the restored target at B lacks
// frames of A's list (0x10 and on: frames the guest had remapped, which the paused
// target has not yet) and Xen refuses one special page that B's list names. The remap
// maps B's frames, names what changed, and the fingerprint taken at A compares equal
// over the sampled pages present at both.
func TestRemapFramesAfterMigration(t *testing.T) {
	a := "0x0+0x400 0x500+0x9 0x7f8+0x8"
	b := "0x0+0x10 0x50+0x3b0 0x500+0x9 0x7f8+0x8"
	p2m := map[uint16]fakeDomain{
		1: {frames: frames(a), seed: 7},
		// same guest at B, without frames 0x10..0x4f and 0x7f9
		5: {frames: frames("0x0+0x10 0x50+0x3b0 0x500+0x9 0x7f8+0x1 0x7fa+0x6"), seed: 7},
		// another guest laid out as the target at B
		6: {frames: frames("0x0+0x10 0x50+0x3b0 0x500+0x9 0x7f8+0x8"), seed: 9},
		// a guest of a quarter of the size
		8: {frames: frames("0x0+0x100 0x7f8+0x8"), seed: 7},
	}
	closed := useFakeP2M(t, p2m)
	x := &Xen{}
	c, err := x.RemapFrames(1, frames(a))
	if err != nil {
		t.Fatal(err)
	}
	if c.After != 0x411 || c.Refused != 0 || x.DomID() != 1 || !x.Mapped() {
		t.Fatalf("open at A: %v, domain %d, mapped %v", c, x.DomID(), x.Mapped())
	}
	fp, err := TakeFingerprint(x)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Unmap(); err != nil || x.Mapped() || *closed != 1 {
		t.Fatalf("unmap: %v, mapped %v, %d closed", err, x.Mapped(), *closed)
	}
	if _, err := x.ReadAt(make([]byte, 8), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read while unmapped: %v, want ErrClosed", err)
	}

	c, err = x.RemapFrames(5, frames(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("at B: %v", c)
	wantLost := frames("0x10+0x40 0x7f9+0x1")
	if !reflect.DeepEqual(c.Lost, wantLost) || len(c.Gained) != 0 || c.Before != 0x411 || c.After != 0x411-0x41 || c.Refused != 1 {
		t.Errorf("change %+v: want lost %v, nothing gained, 0x411 -> 0x3d0 frames, 1 refused", c, wantLost)
	}
	if err := c.Check(); err != nil {
		t.Errorf("a migration's change judged: %v", err)
	}
	if want := frames("0x0+0x10 0x50+0x3b0 0x500+0x9 0x7f8+0x1 0x7fa+0x6"); !reflect.DeepEqual(x.Ranges(), want) || x.DomID() != 5 {
		t.Errorf("map state %v of domain %d, want %v of 5", x.Ranges(), x.DomID(), want)
	}
	if _, err := x.ReadAt(make([]byte, 8), 0x10*xenPage); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("read of a frame B lacks: %v, want ErrOutOfRange", err)
	}
	// The layout differs, so Verify refuses; over the frames present at both it matches.
	if err := fp.Verify(x); !errors.Is(err, ErrGuestChanged) {
		t.Errorf("Verify over a changed layout = %v, want ErrGuestChanged", err)
	}
	fc, err := CheckFingerprintPresent(fp, x)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fingerprint at B: %v (absent %#x)", fc, fc.Absent)
	if len(fc.Differ) != 0 || len(fc.Absent) == 0 || fc.Compared+len(fc.Absent) != len(fp.Pages) || fc.Compared < len(fp.Pages)/2 {
		t.Errorf("fingerprint check %v of %d pages: want none differing, some absent (frames 0x10..0x4f were sampled), most compared", fc, len(fp.Pages))
	}
	for _, g := range fc.Absent {
		if g < 0x10*xenPage || g >= 0x50*xenPage && g != 0x7f9*xenPage {
			t.Errorf("page %#x counted absent, but B has it", g)
		}
	}
	// The resume's decision (the supervisor's and the lab agent's): the same guest.
	if vc, vf, err := fp.VerifyMigrated(x); err != nil || vc.LostFrames() != 0x41 || vf.Compared != fc.Compared {
		t.Errorf("VerifyMigrated at B = %v, %v, %v; want the same guest, 0x41 frames gone", vc, vf, err)
	}

	// The same guest with one sampled page rewritten (a page Xen writes in guest RAM)
	// is accepted; with two, it is another guest.
	for n, domid := range map[int]uint16{1: 11, 2: 12} {
		d := fakeDomain{frames: frames(b), seed: 7, dirty: map[uint64]bool{}}
		for _, p := range fp.Pages[len(fp.Pages)-n:] {
			d.dirty[p.GPA/xenPage] = true
		}
		p2m[domid] = d
		x.Unmap()
		if _, err := x.RemapFrames(domid, frames(b)); err != nil {
			t.Fatal(err)
		}
		_, vf, err := fp.VerifyMigrated(x)
		if len(vf.Differ) != n || (n == 1) != (err == nil) || n == 2 && !errors.Is(err, ErrGuestChanged) {
			t.Errorf("%d sampled pages rewritten: VerifyMigrated = %v (%v); want %d differing, accepted only with one", n, err, vf, n)
		}
	}

	// Another guest at B with the same frames: the pages differ.
	x.Unmap()
	if _, err := x.RemapFrames(6, frames(b)); err != nil {
		t.Fatal(err)
	}
	fc, err = CheckFingerprintPresent(fp, x)
	if err != nil || len(fc.Differ) != fc.Compared || fc.Compared == 0 {
		t.Errorf("another guest: %v, %v; want every compared page to differ", fc, err)
	}
	if _, _, err := fp.VerifyMigrated(x); !errors.Is(err, ErrGuestChanged) {
		t.Errorf("VerifyMigrated of another guest = %v, want ErrGuestChanged", err)
	}

	// A guest that lost three quarters of its frames is not what a migration explains,
	// and the error names the change.
	x.Unmap()
	c, err = x.RemapFrames(8, frames("0x0+0x100 0x7f8+0x8"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check()
	if !errors.Is(err, ErrGuestChanged) || !strings.Contains(err.Error(), "0x100+0x300") {
		t.Errorf("shrunk guest: Check = %v, want ErrGuestChanged naming frames 0x100+0x300", err)
	}
	t.Logf("shrunk guest: %v", err)
	// Too few sampled pages left to say it is the guest.
	if _, vf, err := fp.VerifyMigrated(x); !errors.Is(err, ErrGuestChanged) || !strings.Contains(err.Error(), "sampled pages are present") {
		t.Errorf("VerifyMigrated of the shrunk guest = %v (%v), want ErrGuestChanged: too few pages present", err, vf)
	}

	// Xen maps none of the list (the wrong domain, no privilege): an error, and the map
	// state is kept.
	before := x.Ranges()
	if _, err := x.RemapFrames(9, frames(b)); err == nil {
		t.Error("remap of an unknown domain succeeded")
	}
	if !reflect.DeepEqual(x.Ranges(), before) || x.DomID() != 8 {
		t.Errorf("a failed remap changed the map state: %v of %d", x.Ranges(), x.DomID())
	}
	x.Close()
	if _, err := x.RemapFrames(5, nil); err == nil {
		t.Error("remap of no frames succeeded")
	}
}

func TestRangesMinus(t *testing.T) {
	r := func(s string) []Range {
		if s == "" {
			return nil
		}
		return frames(s)
	}
	for _, tc := range []struct{ a, b, want string }{
		{"0x0+0x10", "", "0x0+0x10"},
		{"0x0+0x10", "0x0+0x10", ""},
		{"0x0+0x10", "0x4+0x2 0x8+0x1", "0x0+0x4 0x6+0x2 0x9+0x7"},
		{"0x0+0x10 0x20+0x10", "0x8+0x20", "0x0+0x8 0x28+0x8"},
		{"0x10+0x10", "0x0+0x8 0x30+0x8", "0x10+0x10"},
		{"0x0+0x4 0x8+0x4", "0x0+0x100", ""},
		{"0x0+0x10 0x20+0x1", "0x2+0x1 0x20+0x1", "0x0+0x2 0x3+0xd"},
	} {
		if got := rangesMinus(r(tc.a), r(tc.b)); !reflect.DeepEqual(got, r(tc.want)) {
			t.Errorf("%s minus %s = %v, want %v", tc.a, tc.b, got, r(tc.want))
		}
	}
}
