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

	"github.com/domainm/domainm/appliance/internal/alert"
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
	// lastReload and lastResult are the last reload attempt and its outcome (status).
	lastReload time.Time
	lastResult string
	// emptyDir is set while the folder holds no rules; the last good set keeps running
	// (at start there is none: nothing is matched).
	emptyDir bool
	// warned holds the compiler warnings of the running set (file, line, text), so a
	// reload alerts only warnings that are new.
	warned map[string]bool
	// broken holds the rule files (relative to the folder, as compiled on their own)
	// that do not compile, with their errors: each is alerted once and is a rules
	// problem until it is fixed or removed.
	broken map[string]brokenFile

	// lastGood holds the text of every rule file of the running set (files compiled on
	// their own and the files they include) as compiled, so that a file that breaks
	// keeps running in its last good version. Only the watcher goroutine (and
	// loadInitial before it) touch it.
	lastGood map[string][]byte
	// tmp is the temporary copy of the folder the running set was compiled from when
	// it holds last good versions ("" when compiled from the folder itself). It lives as
	// long as the set: profiling compiles the set's files again.
	tmp string
}

// lastGoodFile keeps, in the state folder, the text of the running set's rule files, so
// that a file broken while the daemon was down runs in its last good version after a
// restart too.
const lastGoodFile = "rules-last-good.json"

type lastGoodState struct {
	Dir   string            `json:"dir"` // the rules folder as configured
	Files map[string][]byte `json:"files"`
}

// loadLastGood reads the last good texts saved for this rules folder.
func (h *ruleHolder) loadLastGood() {
	var st lastGoodState
	ok, err := loadJSON(filepath.Join(h.s.cfg.State.Dir, lastGoodFile), &st)
	switch {
	case err != nil:
		h.s.log.Warn("last good rule texts not read; a broken rule file is left out", "err", err)
	case ok && st.Dir == h.dir:
		h.lastGood = st.Files
	}
}

// saveLastGood saves the running set's texts (watcher goroutine and start only).
func (h *ruleHolder) saveLastGood() {
	if err := saveJSON(filepath.Join(h.s.cfg.State.Dir, lastGoodFile), lastGoodState{Dir: h.dir, Files: h.lastGood}); err != nil {
		h.s.log.Warn("last good rule texts not saved", "err", err)
	}
}

// brokenFile is a rule file that does not compile.
type brokenFile struct {
	errs []yara.RuleError
	kept bool // its last good version runs in its place
}

// key identifies the errors, so that a file is alerted again only when they change.
func (b brokenFile) key() string {
	var k strings.Builder
	for _, e := range b.errs {
		k.WriteString(e.Error())
		k.WriteByte(0)
	}
	return k.String()
}

type loadedRules struct {
	rules  *yara.Rules
	set    yara.MemoryRules
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

// problems says what is wrong with the rules ("" when nothing is): empty is set when the
// rules folder holds no rule files (not healthy even while the last good set keeps
// running) or the running set has no rules; broken names the files that do not compile
// and what became of each (left out, or running in its last good version).
func (h *ruleHolder) problems() (empty, broken string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.cur.Load().rules.Count()
	head := ""
	if h.emptyDir {
		head = fmt.Sprintf("rules folder %s %s: running the last good set (%d rules)", h.dir, h.noRules(), n)
		if n == 0 {
			head = fmt.Sprintf("rules folder %s %s: memory is scanned with none", h.dir, h.noRules())
		}
	}
	if head == "" && n == 0 {
		head = fmt.Sprintf("no rules loaded from %s: memory is scanned with no rules", h.dir)
	}
	if len(h.broken) == 0 {
		return head, ""
	}
	files := make([]string, 0, len(h.broken))
	for f := range h.broken {
		files = append(files, f)
	}
	sort.Strings(files)
	var parts []string
	for i, f := range files {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(files)-i))
			break
		}
		b := h.broken[f]
		what := "left out"
		if b.kept {
			what = "its last good version keeps running"
		}
		first := yara.RuleError{File: f, Text: "does not compile"}
		if len(b.errs) > 0 {
			first = b.errs[0]
		}
		first.File = filepath.Join(h.dir, first.File)
		more := ""
		if len(b.errs) > 1 {
			more = fmt.Sprintf(" (+%d more errors)", len(b.errs)-1)
		}
		parts = append(parts, fmt.Sprintf("%s%s: %s", first.Error(), more, what))
	}
	return head, fmt.Sprintf("%d rule file(s) do not compile: %s", len(files), strings.Join(parts, "; "))
}

// noRules says how the folder holds no rules (h.mu held): none at all, or none that
// compile.
func (h *ruleHolder) noRules() string {
	if len(h.broken) > 0 {
		return "holds no rules that compile"
	}
	return "holds no rules"
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

// loadInitial compiles the folder at startup. A rule file that does not compile is left
// out and alerted, and the rest loads (there is no older version of it to fall back
// on); an empty folder starts with an alert. Only a folder that cannot be read, or a
// set that cannot be built at all, stops the start.
func (h *ruleHolder) loadInitial() error {
	h.resolve()
	h.loadLastGood()
	c, err := h.compile()
	switch {
	case c.rules == nil:
		return fmt.Errorf("compiling rules: %w", err)
	case errors.Is(err, yara.ErrNoRules) || c.rules.Count() == 0:
		h.swap(c) // there is no older set to keep
		h.setBroken(c.broken)
		h.setEmpty(len(c.broken) == 0)
		if len(c.broken) == 0 {
			h.alertEmpty()
		}
		return nil
	}
	h.swap(c)
	h.setBroken(c.broken)
	h.alertWarnings(c.rules)
	r := c.rules
	h.s.log.Info("rules loaded", "dir", h.dir, "rules", r.Count(), "files", len(r.Files()), "id", r.ID(),
		"window_dependent", len(r.WindowRules()), "broken_files", len(c.broken))
	return nil
}

// compiled is the outcome of compiling the rules folder.
type compiled struct {
	rules    *yara.Rules // nil when nothing usable came out
	hashes   map[string]string
	sources  map[string][]byte // the text of every file in rules, as compiled
	broken   map[string]brokenFile
	compErrs []yara.RuleError // errors that name no file left out (rules is nil then)
	tmp      string           // the temporary folder rules was compiled from, if any
}

// discard removes the temporary folder of a compiled set that is not swapped in.
func (c compiled) discard() {
	if c.tmp != "" {
		os.RemoveAll(c.tmp)
	}
}

// compile compiles the folder. Files that do not compile are left out and the rest is
// loaded (yara.Compile); a file left out that was in the running set is compiled in its
// last good version instead, so that breaking one file (a typo, or an attacker) does not
// disable its rules. For that, the folder is copied to a temporary folder where the
// broken files (and the broken files they include) get their last good text back.
func (h *ruleHolder) compile() (compiled, error) {
	dir := h.real
	r, err := yara.Compile(dir)
	var ce *yara.CompileError
	if r == nil {
		if errors.As(err, &ce) {
			return compiled{compErrs: ce.Errors}, err
		}
		return compiled{}, err
	}
	broken := map[string]brokenFile{}
	if errors.As(err, &ce) {
		broken = brokenFiles(ce, r.Included())
		restore := map[string][]byte{}
		for _, e := range ce.Errors {
			if b, ok := h.lastGood[e.File]; ok {
				restore[e.File] = b
			}
		}
		for f := range broken {
			if b, ok := h.lastGood[f]; ok {
				restore[f] = b
			}
		}
		if len(restore) > 0 {
			if r2, tmp, err2 := compileRestored(dir, restore); r2 != nil {
				left := map[string]bool{}
				var ce2 *yara.CompileError
				if errors.As(err2, &ce2) {
					for _, f := range ce2.Left {
						left[f] = true
					}
				}
				for f, b := range broken {
					b.kept = !left[f] && restore[f] != nil
					broken[f] = b
				}
				r, dir = r2, tmp
			} else {
				h.s.log.Error("rule files' last good versions do not compile; the broken files are left out", "err", err2)
			}
		}
		err = nil
	}
	c := compiled{rules: r, hashes: fileHashes(dir, r), sources: sources(dir, r), broken: broken}
	if dir != h.real {
		c.tmp = dir
	}
	return c, err
}

// brokenFiles groups a compile error's errors by the file left out that they belong
// to: its own errors and those of the files it includes.
func brokenFiles(ce *yara.CompileError, inc map[string][]string) map[string]brokenFile {
	out := map[string]brokenFile{}
	left := map[string]bool{}
	for _, f := range ce.Left {
		left[f] = true
		out[f] = brokenFile{}
	}
	for _, e := range ce.Errors {
		owners := []string{e.File}
		if !left[e.File] {
			owners = nil
			for _, root := range includers(e.File, inc) {
				if left[root] {
					owners = append(owners, root)
				}
			}
			if len(owners) == 0 {
				owners = ce.Left[:1]
			}
		}
		for _, f := range owners {
			b := out[f]
			b.errs = append(b.errs, e)
			out[f] = b
		}
	}
	return out
}

// compileRestored copies the rules folder (hidden entries skipped, as the compiler
// skips them) to a temporary folder, puts back the given files' text and compiles it.
// The caller removes tmp.
func compileRestored(dir string, restore map[string][]byte) (r *yara.Rules, tmp string, err error) {
	tmp, err = os.MkdirTemp("", "domainm-rules-")
	if err != nil {
		return nil, "", err
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		to := filepath.Join(tmp, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(to, 0o700)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, to)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			return os.WriteFile(to, b, 0o600)
		}
		return nil
	})
	for f, b := range restore {
		if err != nil {
			break
		}
		p := filepath.Join(tmp, f)
		if err = os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
			err = os.WriteFile(p, b, 0o600)
		}
	}
	if err != nil {
		os.RemoveAll(tmp)
		return nil, "", err
	}
	r, err = yara.Compile(tmp)
	if r == nil {
		os.RemoveAll(tmp)
		return nil, "", err
	}
	return r, tmp, err
}

// sources reads the text of every file of r (compiled on their own or included) from
// dir, where it was compiled. The files are read again after compiling: a file changed
// in between is what the next reload compiles.
func sources(dir string, r *yara.Rules) map[string][]byte {
	out := map[string][]byte{}
	files := append([]string(nil), r.Files()...)
	for f := range r.Included() {
		files = append(files, f)
	}
	for _, f := range files {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			out[f] = b
		}
	}
	return out
}

// setBroken records the files that do not compile now, alerts each that is newly broken
// (or broken differently) once, with file and line, and says when a file broken before
// compiles again or is gone.
func (h *ruleHolder) setBroken(now map[string]brokenFile) {
	h.mu.Lock()
	was := h.broken
	h.broken = now
	h.mu.Unlock()
	t := h.s.currentTarget()
	files := make([]string, 0, len(now))
	for f := range now {
		files = append(files, f)
	}
	sort.Strings(files)
	n := 0
	for _, f := range files {
		b := now[f]
		if old, ok := was[f]; ok && old.key() == b.key() && old.kept == b.kept {
			continue
		}
		what := "this file is left out, the rest of the folder is loaded"
		if b.kept {
			what = "the file's last good version keeps running in its place"
		}
		h.s.log.Error("rule file does not compile", "file", f, "kept_last_good", b.kept, "errors", len(b.errs))
		for _, e := range b.errs {
			if n++; n > maxRuleErrorAlerts {
				break
			}
			ev := alert.RuleError(h.s.clk.Now(), t, filepath.Join(h.real, e.File), e.Line, e.Text)
			if b.kept {
				ev.Message = fmt.Sprintf("rule file does not compile: %s:%d: %s (%s)", filepath.Join(h.real, e.File), e.Line, e.Text, what)
			} else {
				ev.Message = fmt.Sprintf("rules not loaded: %s:%d: %s (%s)", filepath.Join(h.real, e.File), e.Line, e.Text, what)
			}
			ev.SetTarget(t) // the event id follows the message
			h.s.emit(ev)
		}
	}
	if n > maxRuleErrorAlerts {
		h.s.log.Warn("more rule errors not alerted", "count", n-maxRuleErrorAlerts)
	}
	gone := make([]string, 0, len(was))
	for f := range was {
		if _, ok := now[f]; !ok {
			gone = append(gone, f)
		}
	}
	sort.Strings(gone)
	for _, f := range gone {
		p := filepath.Join(h.real, f)
		msg := fmt.Sprintf("rule file %s compiles again and is loaded", p)
		if _, err := os.Stat(p); err != nil {
			msg = fmt.Sprintf("rule file %s that did not compile is no longer in the rules folder", p)
		}
		h.s.log.Info("rule file no longer broken", "file", f)
		h.s.emit(alert.Health(h.s.clk.Now(), alert.SevInfo, "rules", "error-cleared", msg))
	}
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

func (h *ruleHolder) swap(c compiled) {
	r := c.rules
	l := &loadedRules{rules: r, at: h.s.clk.Now(),
		set:   yara.MemoryRules{Rules: r, Timeout: h.s.cfg.Memory.YaraTimeout, MaxMatches: h.s.cfg.Memory.MaxMatchesPerRule},
		names: map[yara.RuleName]bool{}, hashes: c.hashes}
	for _, n := range r.Names() {
		l.names[n] = true
	}
	h.cur.Store(l)
	if h.tmp != "" && h.tmp != c.tmp {
		os.RemoveAll(h.tmp)
	}
	h.tmp = c.tmp
	if r.Count() > 0 { // an emptied folder at start keeps the texts saved before
		h.lastGood = c.sources
		h.saveLastGood()
	}
	h.s.m.rules.Set(float64(r.Count()))
}

// alertEmpty says that the folder holds no rules. An empty folder is far more often a
// deploy or mount gone wrong than a wish to detect nothing, so after a start the last
// good set keeps running and the findings it made stay open.
func (h *ruleHolder) alertEmpty() {
	h.mu.Lock()
	none := h.noRules()
	h.mu.Unlock()
	h.s.log.Warn("rules folder "+none, "dir", h.dir, "running", h.count())
	msg := fmt.Sprintf("rules folder %s %s: memory is scanned with no rules", h.dir, none)
	if n := h.count(); n > 0 {
		msg = fmt.Sprintf("rules folder %s %s; the last good set (%d rules, %s) keeps running until rules are back", h.dir, none, n, h.id())
	}
	h.s.emit(alert.Health(h.s.clk.Now(), alert.SevHigh, "rules", "empty-ruleset", msg))
}

// reload compiles the folder and swaps the result in when it differs from the running
// set. A rule file that does not compile is left out and the rest loads; one that was in
// the running set runs on in its last good version. Each broken file is alerted once,
// with file and line, and stays a rules problem until it is fixed or removed. Only a set
// that cannot be built at all keeps the whole running set.
func (h *ruleHolder) reload() {
	start := time.Now()
	defer h.noteReload(h.s.clk.Now(), h.tally())
	h.resolve()
	c, err := h.compile()
	switch {
	case c.rules == nil && c.compErrs != nil:
		h.mu.Lock()
		h.failed++
		h.mu.Unlock()
		h.s.m.reloads.WithLabelValues("failed").Inc()
		h.s.log.Error("rules not reloaded: they do not compile; the running set stays", "err", err)
		for i, e := range c.compErrs {
			if i == maxRuleErrorAlerts {
				break
			}
			h.s.emit(alert.RuleError(h.s.clk.Now(), h.s.currentTarget(), filepath.Join(h.real, e.File), e.Line, e.Text))
		}
		return
	case c.rules == nil && !errors.Is(err, yara.ErrNoRules):
		h.mu.Lock()
		h.failed++
		h.mu.Unlock()
		h.s.m.reloads.WithLabelValues("failed").Inc()
		h.s.log.Error("rules not reloaded", "err", err)
		h.s.emit(alert.Health(h.s.clk.Now(), alert.SevHigh, "rules", "unreadable",
			fmt.Sprintf("rules not reloaded, the running set stays: %v", err)))
		return
	case errors.Is(err, yara.ErrNoRules) || c.rules.Count() == 0:
		// Nothing loads (no rule file, or none that compiles and none with a last
		// good version): the last good set keeps running.
		c.discard()
		h.setBroken(c.broken)
		if h.setEmpty(true) {
			return // still empty (alerted)
		}
		h.s.m.reloads.WithLabelValues("empty").Inc()
		h.alertEmpty()
		return
	}
	r := c.rules
	if h.setEmpty(false) {
		h.s.log.Info("rules folder holds rules again", "dir", h.dir, "rules", r.Count())
		h.s.emit(alert.Health(h.s.clk.Now(), alert.SevInfo, "rules", "restored",
			fmt.Sprintf("rules folder %s holds rules again: %d rules in %d files", h.dir, r.Count(), len(r.Files()))))
	}
	if r.ID() == h.id() {
		h.s.log.Debug("rules unchanged", "id", r.ID())
		c.discard()
		h.setBroken(c.broken)
		return
	}
	old := h.cur.Load().rules
	h.swap(c)
	h.count1()
	h.s.m.reloads.WithLabelValues("ok").Inc()
	h.s.log.Info("rules reloaded", "rules", r.Count(), "files", len(r.Files()), "id", r.ID(), "was", old.ID(), "took", time.Since(start),
		"window_dependent", len(r.WindowRules()), "broken_files", len(c.broken))
	h.setBroken(c.broken)
	h.alertWarnings(r)
	msg := fmt.Sprintf("rules reloaded from %s: %d rules in %d files (was %d rules)", h.dir, r.Count(), len(r.Files()), old.Count())
	if n := len(c.broken); n > 0 {
		msg += fmt.Sprintf("; %d file(s) do not compile (alerted as rule-error)", n)
	}
	h.s.emit(alert.Health(h.s.clk.Now(), alert.SevInfo, "rules", "reloaded", msg))
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
	defer func() {
		if h.tmp != "" {
			os.RemoveAll(h.tmp)
		}
	}()
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
