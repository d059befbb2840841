package supervisor

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/control/xenstore"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/memscan"
)

// fakeXenstore is xenstored for the supervisor's real xenstore client: nodes in a map,
// served over the wire protocol (read, write; ENOENT for a missing node), one
// connection per open.
type fakeXenstore struct {
	mu     sync.Mutex
	nodes  map[string]string
	opens  int
	reads  int
	conns  []net.Conn
	broken bool // opens fail
}

func newFakeXenstore() *fakeXenstore { return &fakeXenstore{nodes: map[string]string{}} }

func (f *fakeXenstore) open() (XenStore, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken {
		return nil, errors.New("xenstore: no xenbus")
	}
	f.opens++
	cli, srv := net.Pipe()
	f.conns = append(f.conns, srv)
	go f.serve(srv)
	return xenstore.New(cli), nil
}

// cut ends every open connection (xenstored restarted, say).
func (f *fakeXenstore) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

func (f *fakeXenstore) get(p string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.nodes[p]
	return v, ok
}

func (f *fakeXenstore) set(p, v string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes[p] = v
}

func (f *fakeXenstore) del(p string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nodes, p)
}

func (f *fakeXenstore) count() (opens, reads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens, f.reads
}

func (f *fakeXenstore) serve(c net.Conn) {
	defer c.Close()
	const opRead, opWrite, opError = 2, 11, 16
	send := func(op, id uint32, p []byte) error {
		h := make([]byte, 16)
		binary.LittleEndian.PutUint32(h[0:], op)
		binary.LittleEndian.PutUint32(h[4:], id)
		binary.LittleEndian.PutUint32(h[12:], uint32(len(p)))
		_, err := c.Write(append(h, p...))
		return err
	}
	hdr := make([]byte, 16)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		op, id := binary.LittleEndian.Uint32(hdr[0:]), binary.LittleEndian.Uint32(hdr[4:])
		p := make([]byte, binary.LittleEndian.Uint32(hdr[12:]))
		if _, err := io.ReadFull(c, p); err != nil {
			return
		}
		var err error
		switch op {
		case opRead:
			f.mu.Lock()
			f.reads++
			v, ok := f.nodes[strings.TrimRight(string(p), "\x00")]
			f.mu.Unlock()
			if !ok {
				err = send(opError, id, []byte("ENOENT\x00"))
			} else {
				err = send(op, id, []byte(v))
			}
		case opWrite:
			path, v, _ := strings.Cut(string(p), "\x00")
			f.set(path, v)
			err = send(op, id, []byte("OK\x00"))
		default:
			err = send(opError, id, []byte("ENOSYS\x00"))
		}
		if err != nil {
			return
		}
	}
}

// TestXenConnReused: the liveness question before every pass uses one xenstore
// connection (it opened one per pass), a new one after the connection broke; a
// missing /local/domain/DOMID is "gone" (the client reports ENOENT as
// xenstore.ErrNotFound, which the check before this change did not recognise: a
// destroyed target was "cannot tell", never gone).
func TestXenConnReused(t *testing.T) {
	xs := newFakeXenstore()
	s := &Supervisor{xen: &xenConn{open: xs.open}}
	defer s.xen.close()
	xs.set("/local/domain/7/domid", "7")
	for i := range 5 {
		if ok, err := s.xenDomainAlive(7); !ok || err != nil {
			t.Fatalf("ask %d: alive %v, %v; want alive", i, ok, err)
		}
	}
	if opens, reads := xs.count(); opens != 1 || reads != 5 {
		t.Fatalf("5 questions: %d connections, %d reads; want 1 and 5", opens, reads)
	}
	xs.del("/local/domain/7/domid")
	if ok, err := s.xenDomainAlive(7); ok || err != nil {
		t.Fatalf("destroyed domain: alive %v, %v; want gone, no error", ok, err)
	}
	if opens, _ := xs.count(); opens != 1 {
		t.Fatalf("an ENOENT answer reopened the connection (%d opens)", opens)
	}
	xs.cut() // xenstored restarted: the next question reopens and is answered
	xs.set("/local/domain/7/domid", "7")
	if ok, err := s.xenDomainAlive(7); !ok || err != nil {
		t.Fatalf("after the connection broke: alive %v, %v; want alive", ok, err)
	}
	if opens, _ := xs.count(); opens != 2 {
		t.Fatalf("%d connections after one broke, want 2", opens)
	}
	xs.cut()
	xs.mu.Lock()
	xs.broken = true
	xs.mu.Unlock()
	if _, err := s.xenDomainAlive(7); err == nil {
		t.Fatal("no xenstore: answered")
	}
}

// fakeP2M is Xen's p2m of some domains for memscan.Xen (a memscan.XenMapper): each
// populated frame is backed by a page; a mapping holds the pages it mapped (a frame
// populated again later is another page, which the old mapping does not see), and the
// frames held by open mappings are counted.
type fakeP2M struct {
	mu      sync.Mutex
	doms    map[uint16]map[uint64][]byte
	refuse  map[uint64]bool // frames Xen refuses to map (populated or not)
	held    map[uint64]int  // frame (any domain) -> open mappings holding it
	mapped  int             // mappings made
	perCall []int           // frames asked for per mapping
}

func newFakeP2M() *fakeP2M {
	return &fakeP2M{doms: map[uint16]map[uint64][]byte{}, refuse: map[uint64]bool{}, held: map[uint64]int{}}
}

// populate gives domid frames first..first+n-1, each a fresh page with filler bytes.
func (p *fakeP2M) populate(domid uint16, first, n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.doms[domid]
	if d == nil {
		d = map[uint64][]byte{}
		p.doms[domid] = d
	}
	for f := first; f < first+n; f++ {
		pg := make([]byte, memscan.PageSize)
		for i := range pg {
			pg[i] = byte(f) ^ byte(i*7) ^ byte(domid)*37 | 1
		}
		d[f] = pg
	}
}

func (p *fakeP2M) giveBack(domid uint16, f uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.doms[domid], f)
}

// poke is the guest writing s at gpa.
func (p *fakeP2M) poke(domid uint16, gpa uint64, s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	copy(p.doms[domid][gpa/memscan.PageSize][gpa%memscan.PageSize:], s)
}

func (p *fakeP2M) holds(f uint64) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[f]
}

func (p *fakeP2M) mapRanges(domid uint16, span uint64, ranges []memscan.Range) (memscan.XenMapping, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.doms[domid]
	if !ok {
		return nil, fmt.Errorf("domain %d: ESRCH", domid)
	}
	m := &fakeXenMapping{p: p, errs: make([]int32, span), pages: map[uint64][]byte{}}
	for i := range m.errs {
		m.errs[i] = -2
	}
	asked := 0
	for _, r := range ranges {
		for f := r.GPA / memscan.PageSize; f < r.End()/memscan.PageSize; f++ {
			asked++
			pg, ok := d[f]
			switch {
			case p.refuse[f]:
				m.errs[f] = -1
			case !ok:
				m.errs[f] = -22
			default:
				m.errs[f], m.pages[f] = 0, pg
				p.held[f]++
			}
		}
	}
	p.mapped++
	p.perCall = append(p.perCall, asked)
	return m, nil
}

type fakeXenMapping struct {
	p      *fakeP2M
	errs   []int32
	pages  map[uint64][]byte
	closed bool
}

func (m *fakeXenMapping) Errs() []int32 { return m.errs }

func (m *fakeXenMapping) Copy(dst []byte, gpa uint64) (int, error) {
	m.p.mu.Lock()
	defer m.p.mu.Unlock()
	for n := 0; n < len(dst); {
		pg, ok := m.pages[(gpa+uint64(n))/memscan.PageSize]
		if !ok || m.closed {
			return n, errors.New("fault")
		}
		n += copy(dst[n:], pg[(gpa+uint64(n))%memscan.PageSize:])
	}
	return len(dst), nil
}

func (m *fakeXenMapping) Close() error {
	m.p.mu.Lock()
	defer m.p.mu.Unlock()
	if !m.closed {
		for f := range m.pages {
			m.p.held[f]--
		}
		m.closed = true
	}
	return nil
}

// xenHarness runs the supervisor on xen:7 over a fake p2m and a fake xenstore, as
// domainm run in Domain M: the source opened from domainm/frames, liveness, refresh
// and remap through xenstore. The rules find evilText, second and third.
func xenHarness(t *testing.T) (*harness, *fakeP2M, *fakeXenstore) {
	h, p2m, xs, _ := xenHarnessOn(t, "xen:7")
	return h, p2m, xs
}

// xenHarnessOn is xenHarness with target.memory = memory; opened lists the specs the
// supervisor opened, in order.
func xenHarnessOn(t *testing.T, memory string) (h *harness, p2m *fakeP2M, xs *fakeXenstore, opened func() []string) {
	return xenHarnessAlive(t, memory, nil)
}

// xenHarnessAlive is xenHarnessOn with the liveness question answered by alive (nil:
// xenstore's /local/domain/DOMID/domid, as in Domain M).
func xenHarnessAlive(t *testing.T, memory string, alive func(uint16) (bool, error)) (h *harness, p2m *fakeP2M, xs *fakeXenstore, opened func() []string) {
	p2m = newFakeP2M()
	xs = newFakeXenstore()
	var openedMu sync.Mutex
	var specs []string
	opened = func() []string {
		openedMu.Lock()
		defer openedMu.Unlock()
		return append([]string(nil), specs...)
	}
	p2m.populate(7, 0, 0x800) // 8 MiB
	p2m.poke(7, evilAt, evilText)
	xs.set("/local/domain/7/domid", "7")
	xs.set(xenNodeTarget, "7")
	xs.set(xenNodeFrames, "0x0+0x800")
	open := func(spec, layout string) (memscan.Source, error) {
		openedMu.Lock()
		specs = append(specs, spec)
		openedMu.Unlock()
		var domid uint16
		if _, err := fmt.Sscanf(spec, "xen:%d", &domid); err != nil {
			return nil, fmt.Errorf("unexpected source %s", spec)
		}
		v, _ := xs.get(xenNodeFrames)
		rs, err := memscan.ParseXenFrames(v)
		if err != nil {
			return nil, err
		}
		return memscan.OpenXenFramesWith(p2m.mapRanges, domid, rs)
	}
	rules := filepath.Join(t.TempDir(), "rules")
	os.MkdirAll(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "a.yar"), []byte(ruleEvil+ruleSec+ruleThird), 0o644)
	old := xenSweepDefault
	xenSweepDefault = memscan.XenSweep{Window: 0x400, Limit: 0x1000}
	t.Cleanup(func() { xenSweepDefault = old })
	h = newHarness(t, harnessOpts{memory: memory, open: open, rulesDir: rules, xenstore: xs.open, xenAlive: alive})
	return h, p2m, xs, opened
}

// TestXenGranted: with target.memory = "xen:granted" the supervisor opens the domain
// dom0's grant wrote to domainm/target, read again at every open: a restart after the
// id changed (a co-migration, xl create) opens the new id, not the one it started
// with (which fails with EPERM on Xen: the target ran unwatched); without the node it
// waits, saying why, and opens the domain once the grant writes it; a granted domain
// that is destroyed is waited for until the grant names the new one.
func TestXenGranted(t *testing.T) {
	h, p2m, xs, opened := xenHarnessOn(t, XenGranted)
	h.waitFor("evil found in domain 7", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })
	if o := opened(); len(o) != 1 || o[0] != "xen:7" {
		t.Fatalf("opened %q, want [xen:7] (domainm/target)", o)
	}

	// The target moved: domain 9 (the same guest, plus the second marker); dom0's
	// grant at the destination rewrote domainm/target. The supervisor restarts (crash,
	// OOM, Domain M rebooted): it opens 9.
	clone := func(to uint16) {
		p2m.mu.Lock()
		p2m.doms[to] = map[uint64][]byte{}
		for f, pg := range p2m.doms[7] {
			p2m.doms[to][f] = append([]byte(nil), pg...)
		}
		p2m.mu.Unlock()
		xs.set(fmt.Sprintf("/local/domain/%d/domid", to), fmt.Sprint(to))
	}
	clone(9)
	p2m.poke(9, 0x500*memscan.PageSize+64, second)
	xs.set(xenNodeTarget, "9")
	h.restart()
	h.waitFor("second found in domain 9", func() bool { return len(h.alerts.with("memory-match", "second")) == 1 })
	if o := opened(); len(o) != 2 || o[1] != "xen:9" {
		t.Fatalf("opened %q after the restart, want xen:9 second (domainm/target changed)", o)
	}

	// No grant yet (Domain M booted before dom0 ran domainm-xen grant): waiting, with
	// the reason; the grant's node written: monitoring the domain it names.
	xs.del(xenNodeTarget)
	h.restart()
	st := h.sup.Status(context.Background())
	if st.State != control.StateWaiting || st.Health == nil || !strings.Contains(st.Health.Reason, "no domain granted yet") || !strings.Contains(st.Health.Reason, "domainm-xen grant") {
		t.Fatalf("without domainm/target: state %s, health %+v; want waiting, the reason naming the missing grant", st.State, st.Health)
	}
	if w := h.alerts.with("memory-source-waiting", ""); len(w) != 1 || !strings.Contains(w[0].Message, "no domain granted yet") {
		t.Errorf("waiting alerts %v: want one saying no domain is granted yet", w)
	}
	n := len(opened())
	for range 3 { // the waiting loop retries: nothing opened without the node
		h.clk.Advance(h.cfg.Memory.Interval)
		time.Sleep(20 * time.Millisecond)
	}
	if o := opened(); len(o) != n {
		t.Fatalf("opened %q without a grant", o[n:])
	}
	xs.set(xenNodeTarget, "9")
	h.advanceUntil("monitoring domain 9 once granted", func() bool {
		return len(h.alerts.with("memory-source-appeared", "")) == 1 && h.passes() > 0
	})
	if o := opened(); len(o) != n+1 || o[n] != "xen:9" {
		t.Fatalf("opened %q once granted, want xen:9", o[n:])
	}

	// Domain 9 destroyed: gone, waiting (the reason names the grant); the target is
	// created again as 11 and granted: monitoring 11, without a restart.
	xs.del("/local/domain/9/domid")
	h.advanceUntil("domain 9 gone", func() bool {
		g := h.alerts.with("memory-source-gone", "")
		return len(g) == 1 && strings.Contains(g[0].Message, "Xen domain 9 (domainm/target) no longer exists")
	})
	n = len(opened())
	clone(11)
	p2m.poke(11, 0x600*memscan.PageSize+64, third)
	for range 3 { // still granted to 9, which is gone: not opened
		h.clk.Advance(h.cfg.Memory.Interval)
		time.Sleep(20 * time.Millisecond)
	}
	if st := h.sup.Status(context.Background()); st.State != control.StateWaiting || !strings.Contains(st.Health.Reason, "granted domain 9") {
		t.Errorf("granted domain gone: state %s, reason %q; want waiting, naming the granted domain 9", st.State, st.Health.Reason)
	}
	if o := opened(); len(o) != n {
		t.Errorf("opened %q while the granted domain 9 was gone", o[n:])
	}
	xs.set(xenNodeTarget, "11")
	h.advanceUntil("third found in domain 11", func() bool { return len(h.alerts.with("memory-match", "third")) == 1 })
	if o := opened(); o[len(o)-1] != "xen:11" {
		t.Fatalf("opened %q, want xen:11 last", o)
	}

	// A co-migration's resume names the destination's id (xen:13) explicitly; the
	// config still follows the grant afterwards: 13 destroyed, the target granted
	// again as 15, monitored without a restart.
	ctx := h.handshakeContext()
	if _, err := h.sup.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	clone(13)
	xs.set(xenNodeTarget, "13")
	if _, err := h.sup.Resume(ctx, control.ResumeArgs{Source: "xen:13", Target: control.TargetInfo{DomID: 13}}); err != nil {
		t.Fatalf("resume on xen:13: %v", err)
	}
	h.tick()
	xs.del("/local/domain/13/domid")
	h.advanceUntil("domain 13 gone", func() bool {
		g := h.alerts.with("memory-source-gone", "")
		return len(g) == 2 && strings.Contains(g[1].Message, "Xen domain 13 (domainm/target) no longer exists")
	})
	p := h.passes()
	clone(15)
	xs.set(xenNodeTarget, "15")
	h.advanceUntil("monitoring domain 15", func() bool {
		o := opened()
		return o[len(o)-1] == "xen:15" && h.passes() > p
	})
}

// TestXenFramesFollowTarget: frames the target populates after Domain M opened it are
// mapped and scanned (the blind spot: a map state fixed at open never saw them), a
// frame it gives back is released, frames Xen refuses are asked for again each pass
// without a change reported, and each change is alerted once (memory-source-
// frames-changed). Xen cannot run here: the p2m and xenstore are fakes.
func TestXenFramesFollowTarget(t *testing.T) {
	h, p2m, xs := xenHarness(t)
	h.waitFor("evil found", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })
	h.waitFor("first pass", func() bool { return h.passes() == 1 })
	changed := func() []string {
		var out []string
		for _, e := range h.alerts.with("memory-source-frames-changed", "") {
			out = append(out, e.Message)
		}
		return out
	}
	if c := changed(); len(c) != 0 {
		t.Fatalf("frames-changed alerts of an unchanged target: %q", c)
	}
	if v, _ := xs.get(xenNodeMapped); v != "2048" {
		t.Errorf("domainm/mapped-frames %q after the first pass, want 2048", v)
	}

	// The guest gives back frame 0x10 and populates 0x900 (above its RAM, where no
	// list names it) with the second marker: the sweep (windows of 0x400 frames over
	// 0..0xfff, one per pass) finds it within four passes.
	p2m.giveBack(7, 0x10)
	p2m.populate(7, 0x900, 1)
	p2m.poke(7, 0x900*memscan.PageSize+100, second)
	for i := 0; len(h.alerts.with("memory-match", "second")) == 0; i++ {
		if i == 4 {
			t.Fatalf("the marker in frame 0x900, populated after open, was not found in 4 passes; alerts:\n%s", h.alerts.dump())
		}
		h.tick()
	}
	if p2m.holds(0x10) != 0 || p2m.holds(0x900) != 1 {
		t.Errorf("frame 0x10 (given back) held by %d mappings, 0x900 (new) by %d; want 0 and 1", p2m.holds(0x10), p2m.holds(0x900))
	}
	c := changed()
	if len(c) != 2 || !strings.Contains(c[0], "1 gone (0x10+0x1)") || !strings.Contains(c[1], "1 new (0x900+0x1)") {
		t.Errorf("frames-changed alerts %q: want one naming 0x10 gone, then one naming 0x900 new", c)
	}
	if v, _ := xs.get(xenNodeMapped); v != "2048" {
		t.Errorf("domainm/mapped-frames %q, want 2048 (one gone, one new)", v)
	}

	// dom0 rewrites its list: frame 0x2000 (beyond the sweep) populated with the third
	// marker, and 0x3000, which Xen refuses to map. The pass right after finds the
	// marker; the refused frame changes nothing, however often it is asked for.
	p2m.populate(7, 0x2000, 1)
	p2m.poke(7, 0x2000*memscan.PageSize+8, third)
	p2m.populate(7, 0x3000, 1)
	p2m.mu.Lock()
	p2m.refuse[0x3000] = true
	p2m.mu.Unlock()
	xs.set(xenNodeFrames, "0x0+0x10 0x11+0x7ef 0x900+0x1 0x2000+0x1 0x3000+0x1")
	h.tick()
	if k := len(h.alerts.with("memory-match", "third")); k != 1 {
		t.Errorf("the marker in frame 0x2000 that dom0 listed: %d alerts after one pass, want 1:\n%s", k, h.alerts.dump())
	}
	for range 3 {
		h.tick()
	}
	if c := changed(); len(c) != 3 || !strings.Contains(c[2], "1 new (0x2000+0x1)") || !strings.Contains(c[2], "refused") {
		t.Errorf("frames-changed alerts %q: want a third naming 0x2000, none for the refused 0x3000", c)
	}
	if p2m.holds(0x3000) != 0 {
		t.Error("a refused frame is held")
	}
	// One xenstore connection for all the questions (liveness, the list) of 7 passes.
	if opens, reads := xs.count(); opens != 1 || reads < 14 {
		t.Errorf("%d xenstore connections for %d reads; want 1", opens, reads)
	}
	t.Logf("frames asked for per mapping: %v; the last frames-changed alert: %s", p2m.perCall, c[len(c)-1])

	// xl destroy: the toolstack removes /local/domain/7, the real liveness question
	// (xenstore ENOENT) says gone, and every frame is released.
	n := h.passes()
	xs.del("/local/domain/7/domid")
	h.expectGone(n, "Xen domain 7 no longer exists")
	if p2m.holds(0) != 0 || p2m.holds(0x900) != 0 || p2m.holds(0x2000) != 0 {
		t.Error("the destroyed domain's frames are still held")
	}
	// Its frames still map here (a destroyed domain lingers while others map it), but
	// it is not back until xenstore has it again.
	for range 3 {
		h.clk.Advance(h.cfg.Memory.Interval)
		time.Sleep(20 * time.Millisecond)
	}
	xs.set("/local/domain/7/domid", "7")
	h.advanceUntil("back and scanned", func() bool {
		return len(h.alerts.with("memory-source-back", "")) == 1 && h.passes() > n
	})
	if k := len(h.alerts.with("memory-source-gone", "")); k != 1 {
		t.Errorf("%d gone alerts, want 1", k)
	}
}

// TestXenResumeWritesRemap: the supervisor's resume of a xen: source writes what it
// remapped to domainm/remap, as the lab's agent does, so that domainm-migrate
// migrate --xen reports it (Result.Remap) with the real supervisor as Domain M.
func TestXenResumeWritesRemap(t *testing.T) {
	h, p2m, xs := xenHarness(t)
	ctx := h.handshakeContext()
	// the target at B (domain 9): the same guest without frame 0x10
	p2m.mu.Lock()
	p2m.doms[9] = map[uint64][]byte{}
	for f, pg := range p2m.doms[7] {
		if f != 0x10 {
			p2m.doms[9][f] = append([]byte(nil), pg...)
		}
	}
	p2m.mu.Unlock()
	// another guest at domain 11
	p2m.populate(11, 0, 0x800)

	resume := func(domid int) error {
		if _, err := h.sup.Prepare(ctx); err != nil {
			t.Fatal(err)
		}
		xs.set(xenNodeTarget, fmt.Sprint(domid)) // B's grant
		xs.set(xenNodeFrames, "0x0+0x800")
		xs.set(fmt.Sprintf("/local/domain/%d/domid", domid), fmt.Sprint(domid))
		xs.del(xenNodeRemap)
		_, err := h.sup.Resume(ctx, control.ResumeArgs{Source: fmt.Sprintf("xen:%d", domid),
			Target: control.TargetInfo{DomID: domid}})
		return err
	}
	remap := func() string {
		v, ok := xs.get(xenNodeRemap)
		if !ok {
			t.Fatal("no domainm/remap written")
		}
		return v
	}

	// Another guest: refused, and the remap says why.
	if err := resume(11); err == nil {
		t.Fatal("resume on another guest accepted")
	}
	r := remap()
	t.Logf("another guest: %s", r)
	if !strings.HasPrefix(r, "frames 2048 -> 2048: 0 gone (none), 0 new (none), 0 refused by Xen; fingerprint: ") || !strings.Contains(r, "0 absent") || strings.Contains(r, " 0 differ") {
		t.Errorf("remap of another guest %q: want the frames unchanged and sampled pages differing", r)
	}
	if _, err := h.sup.Resume(ctx, control.ResumeArgs{Source: "xen:12", Target: control.TargetInfo{DomID: 12}}); err == nil {
		t.Fatal("resume on a domain that does not exist accepted")
	}
	if r := remap(); !strings.HasPrefix(r, "opening xen:12: ") {
		t.Errorf("remap after a failed open %q, want the open's error", r)
	}

	// The same guest at B: accepted, frame 0x10 named gone.
	xs.set(xenNodeTarget, "9")
	xs.set(xenNodeFrames, "0x0+0x10 0x11+0x7ef") // B's grant read B's p2m
	xs.set("/local/domain/9/domid", "9")
	if _, err := h.sup.Resume(ctx, control.ResumeArgs{Source: "xen:9", Target: control.TargetInfo{DomID: 9}}); err != nil {
		t.Fatalf("resume at B: %v (remap %q)", err, remap())
	}
	r = remap()
	t.Logf("same guest at B: %s", r)
	if !strings.HasPrefix(r, "frames 2048 -> 2047: 1 gone (0x10+0x1), 0 new (none), 0 refused by Xen; fingerprint: ") || !strings.Contains(r, " 0 differ") {
		t.Errorf("remap at B %q: want frame 0x10 gone, no sampled page differing", r)
	}
	h.tick()
	if st := h.sup.Status(context.Background()).State; st != "monitoring" {
		t.Errorf("state %s after the resume, want monitoring", st)
	}
	if c := h.alerts.with("memory-source-frames-changed", ""); len(c) != 0 {
		t.Errorf("a migration's change alerted as frames-changed: %v", c)
	}
}

// TestXenDomainGoneBeforePrepare: xl destroys a migrated target's source domain as soon
// as the destination has it, which can be before the coordinator's prepare arrives (lab
// runs 21 and 22: a false memory-source-gone and a refused prepare; a refresh that met
// the dying domain, a false frames-changed alert and a prepare that fingerprinted 5120
// of 32785 frames). A refresh that loses frames while the domain no longer exists keeps
// the map state; a domain gone is alerted only xenVanishGrace later, and a prepare in
// between fingerprints every frame through the mapping that still holds the pages, so
// the resume at the destination accepts the same guest, with no alert on the way.
// Without a prepare the domain's end is alerted once the grace has passed.
func TestXenDomainGoneBeforePrepare(t *testing.T) {
	var (
		mu    sync.Mutex
		gone  = map[uint16]bool{}
		armed bool // the next question is answered "alive", and the domain goes
		asked int
	)
	alive := func(domid uint16) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		asked++
		if armed {
			armed, gone[domid] = false, true
			return true, nil
		}
		return !gone[domid], nil
	}
	h, p2m, xs, _ := xenHarnessAlive(t, "xen:7", alive)
	h.waitFor("evil found", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })
	h.waitFor("first pass", func() bool { return h.passes() == 1 })
	falseAlerts := func() []alert.Event {
		return append(h.alerts.with("memory-source-gone", ""), h.alerts.with("memory-source-frames-changed", "")...)
	}

	// The liveness check before the pass finds domain 7 alive; Xen starts freeing it
	// (frames 0x100.. refused) and its domain goes before the refresh asks again.
	p2m.mu.Lock()
	for f := uint64(0x100); f < 0x800; f++ {
		p2m.refuse[f] = true
	}
	p2m.mu.Unlock()
	mu.Lock()
	armed = true
	mu.Unlock()
	h.tick()
	if a := falseAlerts(); len(a) != 0 {
		t.Fatalf("alerts at the migration's end: %v", a)
	}
	if p2m.holds(0x100) != 1 || p2m.holds(0x7ff) != 1 {
		t.Errorf("frames 0x100, 0x7ff held by %d, %d mappings after the declined refresh; want 1 (the map state kept)", p2m.holds(0x100), p2m.holds(0x7ff))
	}

	// The next check finds it gone: no pass, no alert, still monitoring, for a while.
	n := h.passes()
	h.clk.Advance(h.cfg.Memory.Interval)
	h.waitFor("the liveness check", func() bool { mu.Lock(); defer mu.Unlock(); return asked >= 3 })
	time.Sleep(50 * time.Millisecond)
	if a := falseAlerts(); len(a) != 0 || h.passes() != n {
		t.Fatalf("domain gone within the grace: alerts %v, %d passes; want none", a, h.passes()-n)
	}
	if st := h.sup.Status(context.Background()).State; st != control.StateMonitoring {
		t.Fatalf("state %s while awaiting prepare, want monitoring (prepare is taken only then)", st)
	}

	// The coordinator's prepare arrives: taken, every frame fingerprinted; the resume
	// at the destination (domain 9, the same guest) accepts it.
	ctx := h.handshakeContext()
	if _, err := h.sup.Prepare(ctx); err != nil {
		t.Fatalf("prepare after the source domain went: %v", err)
	}
	p2m.mu.Lock()
	p2m.refuse = map[uint64]bool{}
	p2m.doms[9] = map[uint64][]byte{}
	for f, pg := range p2m.doms[7] {
		p2m.doms[9][f] = append([]byte(nil), pg...)
	}
	p2m.mu.Unlock()
	xs.set(xenNodeTarget, "9")
	xs.set("/local/domain/9/domid", "9")
	if _, err := h.sup.Resume(ctx, control.ResumeArgs{Source: "xen:9", Target: control.TargetInfo{DomID: 9}}); err != nil {
		t.Fatalf("resume at the destination: %v", err)
	}
	r, _ := xs.get(xenNodeRemap)
	t.Logf("remap: %s", r)
	if !strings.HasPrefix(r, "frames 2048 -> 2048: 0 gone") || !strings.Contains(r, " 0 differ") {
		t.Errorf("remap %q: want every frame fingerprinted at prepare (2048 -> 2048), none differing", r)
	}
	h.tick()
	if a := falseAlerts(); len(a) != 0 {
		t.Errorf("alerts over the whole migration: %v", a)
	}

	// Domain 9 destroyed with no migration: alerted once the grace has passed.
	mu.Lock()
	gone[9] = true
	mu.Unlock()
	h.clk.Advance(xenVanishGrace / 2)
	h.clk.Advance(h.cfg.Memory.Interval)
	time.Sleep(50 * time.Millisecond)
	if g := h.alerts.with("memory-source-gone", ""); len(g) != 0 {
		t.Fatalf("gone alerted within the grace: %v", g)
	}
	h.advanceUntil("gone alert", func() bool { return len(h.alerts.with("memory-source-gone", "")) == 1 })
	if g := h.alerts.with("memory-source-gone", ""); !strings.Contains(g[0].Message, "Xen domain 9 no longer exists") {
		t.Errorf("gone alert %q: want it to name domain 9", g[0].Message)
	}
}
