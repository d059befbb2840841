package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/domainm/domainm/memscan"
)

// TestSourceReplacedAndGone: the target VM restarting (a new RAM file at the same path)
// is followed; its RAM file removed is alerted once and passes stop until it is back.
func TestSourceReplacedAndGone(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.waitFor("evil found", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })
	h.waitFor("first pass", func() bool { return h.passes() == 1 }) // counted after its alerts

	// A new file renamed over the old one, without the implant.
	tmp := h.ram + ".new"
	f, _ := os.Create(tmp)
	f.Truncate(ramSize)
	f.Close()
	if err := os.Rename(tmp, h.ram); err != nil {
		t.Fatal(err)
	}
	h.tick()
	if k := len(h.alerts.with("memory-source-replaced", "")); k != 1 {
		t.Errorf("%d replaced alerts, want 1:\n%s", k, h.alerts.dump())
	}
	if k := len(h.alerts.with("memory-match-gone", "evil")); k != 1 {
		t.Errorf("the old guest's finding: %d gone alerts, want 1", k)
	}

	// Removed: alerted once, no passes.
	n := h.passes()
	os.Remove(h.ram)
	h.expectGone(n, "was removed")

	// Back, with the implant: reopened and found.
	f, _ = os.Create(tmp)
	f.Truncate(ramSize)
	f.WriteAt([]byte(evilText), 6<<20)
	f.Close()
	os.Rename(tmp, h.ram)
	h.tick()
	if len(h.alerts.with("memory-source-back", "")) != 1 || len(h.alerts.with("memory-match", "evil")) != 2 {
		t.Errorf("after the file came back:\n%s", h.alerts.dump())
	}
}

// TestXenTargetDestroyed (lab run 14: the supervisor went on scanning a destroyed
// target for 4.7 min, its mapping holding the dead domain's frames): a xen: target
// whose domain no longer exists is alerted once as gone, its mapping released, no pass
// runs; when the domain is there again it is reopened and a pass runs. Xen cannot run
// here: the domain's existence and the mapping are stand-ins (a RAM file behind xen:7).
func TestXenTargetDestroyed(t *testing.T) {
	ram := filepath.Join(t.TempDir(), "ram")
	f, _ := os.Create(ram)
	f.Truncate(ramSize)
	f.WriteAt([]byte(evilText), evilAt)
	f.Close()
	var alive, unanswered atomic.Bool
	alive.Store(true)
	var opened, closed atomic.Int32
	open := func(spec, layout string) (memscan.Source, error) {
		if spec != "xen:7" {
			return nil, fmt.Errorf("unexpected source %s", spec)
		}
		if !alive.Load() {
			return nil, errors.New("xen:7: every frame refused")
		}
		src, err := OpenSource("file:"+ram, layout)
		if err != nil {
			return nil, err
		}
		opened.Add(1)
		return &closeCounter{Source: src, n: &closed}, nil
	}
	h := newHarness(t, harnessOpts{memory: "xen:7", open: open,
		xenAlive: func(domid uint16) (bool, error) {
			if domid != 7 {
				return false, fmt.Errorf("asked about domain %d", domid)
			}
			if unanswered.Load() {
				return false, errors.New("xenstore read /local/domain/7/domid: EACCES")
			}
			return alive.Load(), nil
		}})
	h.waitFor("evil found", func() bool { return len(h.alerts.with("memory-match", "evil")) == 1 })
	h.waitFor("first pass", func() bool { return h.passes() == 1 })

	// No answer (no privilege over the target's nodes): monitoring goes on.
	unanswered.Store(true)
	h.tick()
	if k := len(h.alerts.with("memory-source-gone", "")); k != 0 || closed.Load() != 0 {
		t.Errorf("an unanswered liveness question: %d gone alerts, %d mappings released; want none", k, closed.Load())
	}
	unanswered.Store(false)

	n := h.passes()
	alive.Store(false) // xl destroy
	h.expectGone(n, "Xen domain 7 no longer exists")
	if closed.Load() != 1 {
		t.Errorf("%d mappings released while the domain was gone, want 1", closed.Load())
	}
	if st := h.sup.Status(context.Background()).State; st != "waiting" {
		t.Errorf("state %q while the target's domain is gone, want waiting", st)
	}

	alive.Store(true) // the domain is back (same id: a stand-in for a new grant)
	h.advanceUntil("back and scanned", func() bool {
		return len(h.alerts.with("memory-source-back", "")) == 1 && h.passes() > n
	})
	if opened.Load() != 2 {
		t.Errorf("source opened %d times, want 2", opened.Load())
	}
}

// closeCounter counts a source's Close calls.
type closeCounter struct {
	memscan.Source
	n *atomic.Int32
}

func (c *closeCounter) Close() error { c.n.Add(1); return c.Source.Close() }
