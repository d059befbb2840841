package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
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
	// emptyDir is set while the folder holds no rules; the last good set keeps running
	// (at start there is none: nothing is matched).
	emptyDir bool
	// warned holds the compiler warnings of the running set (file, line, text), so a
	// reload alerts only warnings that are new.
	warned map[string]bool
}

type loadedRules struct {
	rules  *yara.Rules
	set    engine.MemoryRules
	at     time.Time
	names  map[yara.RuleName]bool
	hashes map[string]string // namespace → SHA-256 of its file as compiled (read again after)
}

var _ ruleView = (*loadedRules)(nil)

func (l *loadedRules) loaded(n yara.RuleName) bool { return l.names[n] }
func (l *loadedRules) empty() bool                 { return len(l.names) == 0 }
func (l *loadedRules) fileHash(ns string) string   { return l.hashes[ns] }

// fileHashes hashes each namespace's rule text (its file and the files it includes,
// directly or not), so that a finding can tell that its rule changed. Files are read
// again after compiling and may differ from what was compiled; that only decides
// whether a finding that ends is "retired" or "gone".
func fileHashes(dir string, r *yara.Rules) map[string]string {
	parts := map[string][]string{}
	for _, f := range r.Files() {
		parts[f] = []string{f}
	}
	inc := r.Included()
	for f := range inc {
		for _, root := range includers(f, inc) {
			parts[root] = append(parts[root], f)
		}
	}
	out := make(map[string]string, len(parts))
	for root, fs := range parts {
		sort.Strings(fs[1:])
		h := sha256.New()
		for _, f := range fs {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				continue
			}
			fmt.Fprintf(h, "%d:%s;%d:", len(f), f, len(b))
			h.Write(b)
		}
		out[yara.Namespace(root)] = hex.EncodeToString(h.Sum(nil)[:16])
	}
	return out
}

// includers returns the files compiled on their own that include f, directly or not
// (inc maps an included file to the files that include it).
func includers(f string, inc map[string][]string) []string {
	var roots []string
	seen := map[string]bool{f: true}
	todo := []string{f}
	for len(todo) > 0 {
		cur := todo[0]
		todo = todo[1:]
		for _, by := range inc[cur] {
			if seen[by] {
				continue
			}
			seen[by] = true
			if _, included := inc[by]; included {
				todo = append(todo, by)
			} else {
				roots = append(roots, by)
			}
		}
	}
	return roots
}

func newRuleHolder(s *Supervisor) *ruleHolder {
	return &ruleHolder{s: s, dir: filepath.Clean(s.cfg.Rules.Dir), reloaded: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
}

// current is what the scan driver calls before every block.
func (h *ruleHolder) current() memscan.RuleSet { return h.cur.Load().set }

func (h *ruleHolder) count() int { return h.cur.Load().rules.Count() }
func (h *ruleHolder) id() string { return h.cur.Load().rules.ID() }

// problem says what is wrong with the rules, "" when nothing is: an empty rules folder
// is not a healthy state, even while the last good set keeps running.
func (h *ruleHolder) problem() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.emptyDir {
		return ""
	}
	if h.cur.Load().rules.Count() == 0 {
		return fmt.Sprintf("rules folder %s holds no rules: memory is scanned with none", h.dir)
	}
	return fmt.Sprintf("rules folder %s holds no rules: running the last good set (%d rules)", h.dir, h.cur.Load().rules.Count())
}

// setEmpty records whether the folder is empty and returns what it was.
func (h *ruleHolder) setEmpty(e bool) (was bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	was, h.emptyDir = h.emptyDir, e
	if e {
		h.s.m.rulesEmpty.Set(1)
	} else {
		h.s.m.rulesEmpty.Set(0)
	}
	return was
}

// loadInitial compiles the folder at startup. A folder that does not compile stops the
// start (there is no older set to fall back on); an empty one starts with an alert.
func (h *ruleHolder) loadInitial() error {
	h.resolve()
	r, err := yara.Compile(h.real)
	switch {
	case errors.Is(err, yara.ErrNoRules) || err == nil && r.Count() == 0:
		h.swap(r) // there is no older set to keep
		h.setEmpty(true)
		h.alertEmpty()
		return nil
	case err != nil:
		return fmt.Errorf("compiling rules: %w", err)
	}
	h.swap(r)
	h.alertWarnings(r)
	h.s.log.Info("rules loaded", "dir", h.dir, "rules", r.Count(), "files", len(r.Files()), "id", r.ID(),
		"window_dependent", len(r.WindowRules()))
	return nil
}

// alertWarnings alerts the compiler's warnings about a set just loaded (libyara's "may
// slow down scanning" among them: a slow rule makes passes overdue), each with file and
// line, as domainm rules check prints them; a warning the running set had already is
// not alerted again.
func (h *ruleHolder) alertWarnings(r *yara.Rules) {
	cur := map[string]bool{}
	n := 0
	for _, w := range r.Warnings() {
		k := fmt.Sprintf("%s\x00%d\x00%s", w.File, w.Line, w.Text)
		cur[k] = true
		if h.warned[k] {
			continue
		}
		h.s.log.Warn("rule warning", "file", w.File, "line", w.Line, "warning", w.Text)
		if n++; n <= maxRuleErrorAlerts {
			h.s.emit(alert.RuleWarning(h.s.clk.Now(), h.s.currentTarget(), filepath.Join(h.real, w.File), w.Line, w.Text))
		}
	}
	if n > maxRuleErrorAlerts {
		h.s.log.Warn("more rule warnings not alerted", "count", n-maxRuleErrorAlerts)
	}
	h.warned = cur
}

// resolve follows symlinks in dir; when that fails (dir is gone) real stays dir.
func (h *ruleHolder) resolve() {
	h.real = h.dir
	if p, err := filepath.EvalSymlinks(h.dir); err == nil {
		h.real = p
	}
}

func (h *ruleHolder) swap(r *yara.Rules) {
	l := &loadedRules{rules: r, at: h.s.clk.Now(),
		set:   engine.MemoryRules{Rules: r, Timeout: h.s.cfg.Memory.YaraTimeout, MaxMatches: h.s.cfg.Memory.MaxMatchesPerRule},
		names: map[yara.RuleName]bool{}, hashes: fileHashes(h.real, r)}
	for _, n := range r.Names() {
		l.names[n] = true
	}
	h.cur.Store(l)
	h.s.m.rules.Set(float64(r.Count()))
}

// alertEmpty says that the folder holds no rules. An empty folder is far more often a
// deploy or mount gone wrong than a wish to detect nothing, so after a start the last
// good set keeps running and the findings it made stay open.
func (h *ruleHolder) alertEmpty() {
	h.s.log.Warn("rules folder holds no rules", "dir", h.dir, "running", h.count())
	msg := fmt.Sprintf("rules folder %s holds no rules: memory is scanned with no rules", h.dir)
	if n := h.count(); n > 0 {
		msg = fmt.Sprintf("rules folder %s holds no rules; the last good set (%d rules, %s) keeps running until rules are back", h.dir, n, h.id())
	}
	h.s.emit(alert.Health(h.s.clk.Now(), alert.SevHigh, "rules", "empty-ruleset", msg))
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
	case errors.Is(err, yara.ErrNoRules) || err == nil && r.Count() == 0:
		if h.setEmpty(true) {
			return // still empty (alerted)
		}
		h.s.m.reloads.WithLabelValues("empty").Inc()
		h.alertEmpty()
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
	if h.setEmpty(false) {
		h.s.log.Info("rules folder holds rules again", "dir", h.dir, "rules", r.Count())
		h.s.emit(alert.Health(h.s.clk.Now(), alert.SevInfo, "rules", "restored",
			fmt.Sprintf("rules folder %s holds rules again: %d rules in %d files", h.dir, r.Count(), len(r.Files()))))
	}
	if r.ID() == h.id() {
		h.s.log.Debug("rules unchanged", "id", r.ID())
		return
	}
	old := h.cur.Load().rules
	h.swap(r)
	h.count1()
	h.s.m.reloads.WithLabelValues("ok").Inc()
	h.s.log.Info("rules reloaded", "rules", r.Count(), "files", len(r.Files()), "id", r.ID(), "was", old.ID(), "took", time.Since(start),
		"window_dependent", len(r.WindowRules()))
	h.alertWarnings(r)
	h.s.emit(alert.Health(h.s.clk.Now(), alert.SevInfo, "rules", "reloaded",
		fmt.Sprintf("rules reloaded from %s: %d rules in %d files (was %d rules)", h.dir, r.Count(), len(r.Files()), old.Count())))
	h.signal()
	h.profile(r)
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
	h.profile(h.cur.Load().rules) // the set loaded at start (no pass yet: costs only)
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
