package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/memscan"
)

// Test memory: an 8 MiB flat RAM file with markers at known addresses.
const (
	ramSize   = 8 << 20
	evilAt    = 3<<20 + 100
	evilText  = "EVIL-IMPLANT-1234"
	secondAt  = 5<<20 - 6 // straddles a 1 MiB block boundary... and the 5 MiB one
	second    = "SECOND-MARKER-5678"
	thirdAt   = 7<<20 + 4000
	third     = "THIRD-MARKER-9012"
	ruleEvil  = "rule evil { strings: $a = \"" + evilText + "\" condition: $a }\n"
	ruleSec   = "rule second { strings: $a = \"" + second + "\" condition: $a }\n"
	ruleThird = "rule third { strings: $a = \"" + third + "\" condition: $a }\n"
)

// recorder is an Emitter that keeps every alert.
type recorder struct {
	mu     sync.Mutex
	events []alert.Event
}

func (r *recorder) Emit(e alert.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

// with returns the events whose action is action and, for rule matches, rule is rule.
func (r *recorder) with(action, rule string) []alert.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []alert.Event
	for _, e := range r.events {
		if e.Event.Action == action && (rule == "" || e.Rule != nil && e.Rule.Name == rule) {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		fmt.Fprintf(&b, "  %s: %s\n", e.Event.Action, e.Message)
	}
	return b.String()
}

type harness struct {
	t      *testing.T
	dir    string
	ram    string
	rules  string
	cfg    *config.Config
	clk    *fakeClock
	alerts *recorder
	sup    *Supervisor
	deps   Deps
	cancel context.CancelFunc
	done   chan error

	mu       sync.Mutex
	notified []string
}

type harnessOpts struct {
	realClock bool
	watchdog  time.Duration
	open      func(spec, layout string) (memscan.Source, error)
	blockSize config.Size
	interval  time.Duration
	disk      DiskChecker
	rulesDir  string // instead of DIR/rules (the harness writes a.yar only there)
	device    string // control.device
	memory    string // target.memory instead of file:DIR/ram
	xenAlive  func(domid uint16) (bool, error)
	xenstore  func() (XenStore, error) // Deps.OpenXenstore
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, ram: filepath.Join(dir, "ram"), rules: filepath.Join(dir, "rules"),
		clk: newFakeClock(), alerts: &recorder{}, done: make(chan error, 1)}
	f, err := os.Create(h.ram)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(ramSize)
	f.Close()
	h.poke(evilAt, evilText)
	h.poke(secondAt, second)
	h.poke(thirdAt, third)
	if o.rulesDir != "" {
		h.rules = o.rulesDir
	} else {
		os.MkdirAll(h.rules, 0o755)
		h.writeRule("a.yar", ruleEvil)
	}

	c := config.Default()
	c.Path = "test.toml"
	c.Target.Name, c.Target.UUID = "t1", "123e4567-e89b-12d3-a456-426614174000"
	c.Target.Memory = "file:" + h.ram
	if o.memory != "" {
		c.Target.Memory = o.memory
	}
	c.Memory.Interval = time.Minute
	if o.interval != 0 {
		c.Memory.Interval = o.interval
	}
	c.Memory.BlockSize = 1 << 20
	if o.blockSize != 0 {
		c.Memory.BlockSize = o.blockSize
	}
	c.Memory.Workers = 2
	c.Rules.Dir = h.rules
	c.Rules.Debounce = 100 * time.Millisecond
	c.State.Dir = filepath.Join(dir, "state")
	c.Control.Socket = filepath.Join(dir, "run", "control.sock")
	c.Control.Device = o.device
	h.cfg = &c

	deps := Deps{
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Clock:    h.clk,
		Alerts:   h.alerts,
		Watchdog: o.watchdog,
		Notify: func(m string) {
			h.mu.Lock()
			h.notified = append(h.notified, m)
			h.mu.Unlock()
		},
		OpenSource:     o.open,
		XenDomainAlive: o.xenAlive,
		OpenXenstore:   o.xenstore,
		Disk:           o.disk,
	}
	if o.disk != nil {
		c.Target.Disk = "/images/t1.img"
		c.Disk.Interval = time.Hour
	}
	if testing.Verbose() {
		deps.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.realClock {
		deps.Clock = SystemClock{}
	}
	h.deps = deps
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) start() {
	h.t.Helper()
	var err error
	h.sup, err = New(h.cfg, h.deps)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	ready := h.notifiedCount("READY=1")
	go func() { h.done <- h.sup.Run(ctx) }()
	h.waitFor("READY=1", func() bool { return h.notifiedCount("READY=1") > ready })
}

// restart stops the supervisor and starts a new one on the same config and state, with
// a fresh alert recorder.
func (h *harness) restart() {
	h.t.Helper()
	h.stop()
	h.alerts = &recorder{}
	h.deps.Alerts = h.alerts
	h.start()
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		h.t.Error("Run did not return after cancel")
	}
}

// poke writes s into the RAM file at off (the mmapped source sees it at once).
func (h *harness) poke(off int64, s string) {
	h.t.Helper()
	f, err := os.OpenFile(h.ram, os.O_WRONLY, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(s), off); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) erase(off int64, n int) { h.poke(off, string(make([]byte, n))) }

func (h *harness) writeRule(name, text string) {
	h.t.Helper()
	p := filepath.Join(h.rules, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) notifiedCount(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.notified {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; alerts:\n%s", what, h.alerts.dump())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) passes() int { return h.sup.Status(context.Background()).Passes }

// expectGone advances the clock three intervals after the memory source went away and
// checks that it is alerted once as gone (the alert text containing what, if not
// empty) and that no pass ran meanwhile (passes were n before it went); it returns the
// gone alert.
func (h *harness) expectGone(n int, what string) alert.Event {
	h.t.Helper()
	for range 3 {
		h.clk.Advance(h.cfg.Memory.Interval)
		time.Sleep(20 * time.Millisecond)
	}
	h.waitFor("gone alert", func() bool { return len(h.alerts.with("memory-source-gone", "")) == 1 })
	time.Sleep(50 * time.Millisecond)
	gone := h.alerts.with("memory-source-gone", "")
	if len(gone) != 1 || h.passes() != n || !strings.Contains(gone[0].Message, what) {
		h.t.Fatalf("%d gone alerts (%v) and %d passes while the source was gone; want 1 naming %q, and 0", len(gone), gone, h.passes()-n, what)
	}
	return gone[0]
}

// advanceUntil advances the clock by an interval at a time until cond holds: a loop
// waiting for its source arms its retry relative to the clock's time then, so one
// Advance made before the loop armed it (a loaded machine) would be lost.
func (h *harness) advanceUntil(what string, cond func() bool) {
	h.t.Helper()
	h.waitFor(what, func() bool {
		if cond() {
			return true
		}
		h.clk.Advance(h.cfg.Memory.Interval)
		return false
	})
}

// tick advances the fake clock by one interval and waits for the pass it starts.
func (h *harness) tick() {
	h.t.Helper()
	n := h.passes()
	h.clk.Advance(h.cfg.Memory.Interval)
	h.waitFor(fmt.Sprintf("pass %d", n+1), func() bool { return h.passes() > n })
}
