package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/domainm/domainm/appliance/alert"
	"github.com/domainm/domainm/appliance/engine"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// maxRuleErrorAlerts bounds the rule-error alerts one failed reload sends.
const maxRuleErrorAlerts = 20

// ruleHolder owns the running rule set and reloads it when the rules folder changes.
type ruleHolder struct {
	s   *Supervisor
	dir string // as configured; may be a symlink that deploy tools swap (ln -s new tmp; mv -T tmp dir)
	// real is dir with symlinks resolved, as of the last compile; only the watcher
	// goroutine (and loadInitial before it) touch it.
	real string
	cur  atomic.Pointer[loadedRules]
	// reloaded is signalled (without blocking) after a new set was swapped in, so the
	// memory loop can start a pass with it.
	reloaded chan struct{}
	// kick asks for a reload now, without debounce (SIGHUP).
	kick chan struct{}

	mu      sync.Mutex
	reloads int
	failed  int
}

type loadedRules struct {
	rules *yara.Rules
	set   engine.MemoryRules
	at    time.Time
}

func newRuleHolder(s *Supervisor) *ruleHolder {
	return &ruleHolder{s: s, dir: filepath.Clean(s.cfg.Rules.Dir), reloaded: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
}

// current is what the scan driver calls before every block.
func (h *ruleHolder) current() memscan.RuleSet { return h.cur.Load().set }

func (h *ruleHolder) count() int { return h.cur.Load().rules.Count() }
func (h *ruleHolder) id() string { return h.cur.Load().rules.ID() }

// loadInitial compiles the folder at startup. A folder that does not compile stops the
// start (there is no older set to fall back on); an empty one starts with an alert.
func (h *ruleHolder) loadInitial() error {
	h.resolve()
	r, err := yara.Compile(h.real)
	switch {
	case errors.Is(err, yara.ErrNoRules):
		h.swap(r)
		h.alertEmpty()
		return nil
	case err != nil:
		return fmt.Errorf("compiling rules: %w", err)
	}
	h.swap(r)
	for _, w := range r.Warnings() {
		h.s.log.Warn("rule warning", "file", w.File, "line", w.Line, "warning", w.Text)
	}
	h.s.log.Info("rules loaded", "dir", h.dir, "rules", r.Count(), "files", len(r.Files()), "id", r.ID())
	return nil
}

// resolve follows symlinks in dir; when that fails (dir is gone) real stays dir.
func (h *ruleHolder) resolve() {
	h.real = h.dir
	if p, err := filepath.EvalSymlinks(h.dir); err == nil {
		h.real = p
	}
}

func (h *ruleHolder) swap(r *yara.Rules) {
	h.cur.Store(&loadedRules{rules: r, set: engine.MemoryRules{Rules: r}, at: h.s.clk.Now()})
}

func (h *ruleHolder) alertEmpty() {
	h.s.log.Warn("rules folder holds no rule files", "dir", h.dir)
	h.s.emit(alert.Health(h.s.clk.Now(), alert.SevHigh, "rules", "empty-ruleset",
		fmt.Sprintf("rules folder %s holds no *.yar or *.yara files: memory is scanned with no rules", h.dir)))
}

// reload compiles the folder and swaps the result in when it compiled and differs from
// the running set. A set that fails to compile is not loaded; each error is alerted
// with its file and line.
func (h *ruleHolder) reload() {
	start := time.Now()
	h.resolve()
	r, err := yara.Compile(h.real)
	var ce *yara.CompileError
	switch {
	case errors.As(err, &ce):
		h.mu.Lock()
		h.failed++
		h.mu.Unlock()
		h.s.m.reloads.WithLabelValues("failed").Inc()
		h.s.log.Error("rules not reloaded: they do not compile; the running set stays", "err", err)
		for i, e := range ce.Errors {
			if i == maxRuleErrorAlerts {
				break
			}
			h.s.emit(alert.RuleError(h.s.clk.Now(), h.s.currentTarget(), filepath.Join(h.real, e.File), e.Line, e.Text))
		}
		return
	case errors.Is(err, yara.ErrNoRules):
		if h.cur.Load().rules.Count() == 0 && len(h.cur.Load().rules.Files()) == 0 {
			return // still empty
		}
		h.swap(r)
		h.count1()
		h.s.m.reloads.WithLabelValues("empty").Inc()
		h.alertEmpty()
		h.signal()
		return
	case err != nil:
		h.mu.Lock()
		h.failed++
		h.mu.Unlock()
		h.s.m.reloads.WithLabelValues("failed").Inc()
		h.s.log.Error("rules not reloaded", "err", err)
		h.s.emit(alert.Health(h.s.clk.Now(), alert.SevHigh, "rules", "unreadable",
			fmt.Sprintf("rules not reloaded, the running set stays: %v", err)))
		return
	}
	if r.ID() == h.id() {
		h.s.log.Debug("rules unchanged", "id", r.ID())
		return
	}
	old := h.cur.Load().rules
	h.swap(r)
	h.count1()
	h.s.m.reloads.WithLabelValues("ok").Inc()
	h.s.log.Info("rules reloaded", "rules", r.Count(), "files", len(r.Files()), "id", r.ID(), "was", old.ID(), "took", time.Since(start))
	h.s.emit(alert.Health(h.s.clk.Now(), alert.SevInfo, "rules", "reloaded",
		fmt.Sprintf("rules reloaded from %s: %d rules in %d files (was %d rules)", h.dir, r.Count(), len(r.Files()), old.Count())))
	h.signal()
}

func (h *ruleHolder) count1() {
	h.mu.Lock()
	h.reloads++
	h.mu.Unlock()
}

func (h *ruleHolder) signal() {
	select {
	case h.reloaded <- struct{}{}:
	default:
	}
}

// watch starts watching the rules folder, its subfolders and its parent (to notice the
// folder itself being replaced).
func (h *ruleHolder) watch() (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching rules: %w", err)
	}
	if err := w.Add(filepath.Dir(h.dir)); err != nil {
		h.s.log.Warn("cannot watch the rules folder's parent; replacing the folder itself will go unnoticed", "err", err)
	}
	if err := h.addTree(w, h.real); err != nil {
		w.Close()
		return nil, fmt.Errorf("watching rules: %w", err)
	}
	return w, nil
}

// addTree watches dir and every folder below it (hidden ones too: cheap, and it keeps
// the logic simple; the compiler skips them).
func (h *ruleHolder) addTree(w *fsnotify.Watcher, dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != dir && errors.Is(err, fs.ErrNotExist) {
				return nil // vanished while walking
			}
			return err
		}
		if d.IsDir() {
			if err := w.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
}

// relevant reports whether an event can change the rule set: one on the configured
// folder itself (created, replaced, a symlink swapped) or inside the resolved folder.
func (h *ruleHolder) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	if ev.Name == h.dir {
		return true
	}
	for _, d := range []string{h.dir, h.real} {
		if strings.HasPrefix(ev.Name, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// run waits for changes, debounces them and reloads. Compilation runs here, off the
// scan path; the swap is one atomic store.
func (h *ruleHolder) run(ctx context.Context, w *fsnotify.Watcher) {
	defer w.Close()
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if !h.relevant(ev) {
				continue
			}
			h.s.log.Debug("rules folder changed", "event", ev.String())
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					// A new subfolder, or the folder itself recreated or re-pointed:
					// watch it and everything already inside it.
					dir := ev.Name
					if ev.Name == h.dir {
						h.resolve()
						dir = h.real
					}
					if err := h.addTree(w, dir); err != nil {
						h.s.log.Warn("cannot watch new rules subfolder", "dir", dir, "err", err)
					}
				}
			}
			debounce = h.s.clk.After(h.s.cfg.Rules.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflow loses events: reload to be sure.
			h.s.log.Warn("rules watcher error; reloading to be safe", "err", err)
			debounce = h.s.clk.After(h.s.cfg.Rules.Debounce)
		case <-debounce:
			debounce = nil
			h.reload()
		case <-h.kick:
			debounce = nil
			h.reload()
		}
	}
}

// ReloadRules recompiles the rules folder now (SIGHUP), without waiting for a change.
func (s *Supervisor) ReloadRules() {
	if s.rules == nil {
		return
	}
	s.log.Info("rule reload requested")
	select {
	case s.rules.kick <- struct{}{}:
	default: // one is pending already
	}
}
