package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/control/xenstore"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
)

// sourceFile remembers which file a file: or elf: source was opened from, so that the
// memory loop notices the target's RAM file being removed (the VM stopped) or replaced
// (the VM restarted with a new file at the same path). An open mapping of a removed
// file stays readable: without this check the supervisor would go on scanning a dead
// guest's memory and never see the new one.
//
// A xen:DOMID source has no file; its mapping of a destroyed domain's frames stays
// readable too (and keeps Xen from freeing them), so the domain itself is looked for
// before each pass (alive, from Deps.XenDomainAlive).
type sourceFile struct {
	spec, layout string
	path         string
	info         os.FileInfo // nil for sources that are not files (xen:)
	domid        int         // the xen: source's domain, -1 for other sources
	alive        func(domid uint16) (bool, error)
	// granted: the spec is xen:granted, the domain is the one dom0's last grant wrote
	// to domainm/target, read again at every open (domid is the one opened last).
	granted bool
}

// XenGranted is the memory source spec of the Xen domain that dom0's domainm-xen grant
// named last in Domain M's xenstore node domainm/target. Domain ids change at every
// xl create and migration; with xen:granted a restarted supervisor (crash, OOM, reboot
// of Domain M) opens the target's id now, not the one a config file was written with.
const XenGranted = "xen:granted"

// errNoGrant: xen:granted and no domainm/target node (dom0 has not run the grant yet).
var errNoGrant = errors.New("no domain granted yet: xenstore node domainm/target is missing (run domainm-xen grant DOMAINM TARGET in dom0)")

// grantedGoneError: xen:granted names a domain that does not exist (destroyed, or not
// created yet by the grant's next run).
type grantedGoneError struct{ domid int }

func (e *grantedGoneError) Error() string {
	return fmt.Sprintf("the granted domain %d (domainm/target) does not exist (destroyed? run domainm-xen grant for the new target)", e.domid)
}

// ResolveSpec turns xen:granted into xen:DOMID, the domain domainm/target names now
// (one xenstore read); other specs are returned as they are. For the one-shot
// commands (scan-memory, inspect); the daemon resolves at every open.
func ResolveSpec(spec string) (string, error) {
	if spec != XenGranted {
		return spec, nil
	}
	s := &Supervisor{xen: &xenConn{open: openXenstore}}
	defer s.xen.close()
	id, err := s.resolveGranted()
	if err != nil {
		return "", fmt.Errorf("%s: %w", spec, err)
	}
	return fmt.Sprintf("xen:%d", id), nil
}

// resolveGranted reads the domain id dom0 granted (domainm/target).
func (s *Supervisor) resolveGranted() (int, error) {
	v, err := s.xen.read(xenNodeTarget)
	if errors.Is(err, xenstore.ErrNotFound) {
		return -1, errNoGrant
	}
	if err != nil {
		return -1, fmt.Errorf("reading xenstore domainm/target: %w", err)
	}
	id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
	if err != nil || id == 0 {
		return -1, fmt.Errorf("xenstore domainm/target holds %q, not a domain id", v)
	}
	return int(id), nil
}

func newSourceFile(spec, layout string) sourceFile {
	sf := sourceFile{spec: spec, layout: layout, domid: -1}
	kind, arg, ok := strings.Cut(spec, ":")
	switch {
	case ok && (kind == "file" || kind == "elf" || kind == "disk"):
		sf.path = arg
	case spec == XenGranted:
		sf.granted = true
	case ok && kind == "xen":
		if id, err := strconv.ParseUint(arg, 10, 16); err == nil {
			sf.domid = int(id)
		}
	}
	return sf
}

// openTracked opens spec and records the file it came from. The file is looked at
// before and after the open, and the open is retried once if it changed in between.
func (s *Supervisor) openTracked(spec, layout string) (memscan.Source, sourceFile, error) {
	sf := newSourceFile(spec, layout)
	open := spec
	if sf.granted {
		id, err := s.resolveGranted()
		if err != nil {
			return nil, sf, err
		}
		sf.domid, open = id, fmt.Sprintf("xen:%d", id)
	}
	if sf.domid >= 0 {
		sf.alive = s.deps.XenDomainAlive
		if sf.alive == nil {
			sf.alive = s.xenDomainAlive
		}
	}
	if sf.granted {
		// A destroyed domain's frames may still map (others hold them): not taken.
		if ok, err := sf.alive(uint16(sf.domid)); err == nil && !ok {
			return nil, sf, &grantedGoneError{sf.domid}
		}
	}
	for try := 0; ; try++ {
		before, _ := sf.stat()
		src, err := s.deps.OpenSource(open, layout)
		if err != nil {
			return nil, sf, err
		}
		after, _ := sf.stat()
		if sf.path == "" || before != nil && after != nil && os.SameFile(before, after) || try == 1 {
			sf.info = after
			return src, sf, nil
		}
		src.Close()
	}
}

// sameFile reports whether o was opened from the very file sf was (same spec, same
// inode): the same guest's memory, not a copy.
func (sf sourceFile) sameFile(o sourceFile) bool {
	return sf.info != nil && o.info != nil && sf.spec == o.spec && os.SameFile(sf.info, o.info)
}

func (sf sourceFile) stat() (os.FileInfo, error) {
	if sf.path == "" {
		return nil, nil
	}
	return os.Stat(sf.path)
}

// xenVanishGrace is how long a xen: source's domain may be gone before it is alerted
// and unmapped, waiting for the prepare of a migration whose end destroyed it: the
// coordinator sends prepare at the target's suspend (domainm-xen wait-suspend), before
// the destroy, so only a slow prepare (seconds in the nested lab) lands here. The
// target does not exist meanwhile: nothing runs unwatched, the alert of a real end is
// late by this much.
const xenVanishGrace = 30 * time.Second

// sourceState is what checkSource found.
type sourceState int

const (
	sourceSame     sourceState = iota
	sourceGone                 // the file is no longer there
	sourceReplaced             // another file is there now
)

// check reports what became of the source. For a xen: source it also returns the
// error of a liveness question that could not be answered (the source is then taken as
// still there).
func (sf sourceFile) check() (sourceState, error) {
	if sf.domid >= 0 && sf.alive != nil {
		ok, err := sf.alive(uint16(sf.domid))
		if err == nil && !ok {
			return sourceGone, nil
		}
		return sourceSame, err
	}
	if sf.info == nil {
		return sourceSame, nil
	}
	fi, err := sf.stat()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sourceGone, nil
	case err != nil:
		return sourceSame, nil // cannot tell; the pass will report read errors if any
	case !os.SameFile(fi, sf.info):
		return sourceReplaced, nil
	}
	return sourceSame, nil
}

// sourcePoll is how often a missing memory source is looked for, besides the
// notifications on its folder (which sysfs and some devices do not send).
const sourcePoll = time.Second

// sourceWait is the memory loop's state while its source does not exist (the target
// has not started, or its RAM file was removed): it watches the file's folder and
// polls, and the loop opens the source when it appears. Owned by the loop's goroutine.
type sourceWait struct {
	waiting bool
	wake    chan struct{}     // the folder changed: look again now
	w       *fsnotify.Watcher // nil when the folder cannot be watched
	lastErr string            // the last open failure logged (logged again only when it changes)
}

// startWaiting enters the waiting state: the source is closed and its folder watched.
func (m *memLoop) startWaiting() {
	if m.src != nil {
		m.src.Close()
		m.src = nil
	}
	m.driver.Forget()
	m.guest.reset()
	m.guestAlerted = false
	m.cursor, m.partial = 0, map[string]detectors.Finding{}
	m.spots.reset()
	m.failing = false
	m.setPassHealth("", nil)
	w := &m.wait
	w.waiting, w.lastErr = true, ""
	if w.wake == nil {
		w.wake = make(chan struct{}, 1)
	}
	if w.w != nil || m.file.path == "" {
		return
	}
	fw, err := fsnotify.NewWatcher()
	if err == nil {
		err = fw.Add(filepath.Dir(m.file.path))
	}
	if err != nil {
		m.s.log.Warn("cannot watch the memory source's folder; polling for it", "path", m.file.path, "every", sourcePoll, "err", err)
		if fw != nil {
			fw.Close()
		}
		return
	}
	w.w = fw
	go func(events <-chan fsnotify.Event, wake chan<- struct{}, path string) {
		for ev := range events {
			if ev.Name == path {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}
	}(fw.Events, w.wake, m.file.path)
	go func(errs <-chan error) {
		for range errs { // overflow: the poll still finds the file
		}
	}(fw.Errors)
}

// stopWatching ends the folder watch.
func (w *sourceWait) stopWatching() {
	if w.w != nil {
		w.w.Close()
		w.w = nil
	}
}

// closeSource releases the source and the folder watch (a start that failed later).
func (m *memLoop) closeSource() {
	m.wait.stopWatching()
	if m.src != nil {
		m.src.Close()
		m.src = nil
	}
}

// retryIn is how long the loop waits before it looks at its source again after
// checkSource said no.
func (m *memLoop) retryIn() time.Duration {
	if !m.vanished.IsZero() {
		return max(0, m.vanished.Add(xenVanishGrace).Sub(m.s.clk.Now()))
	}
	if m.wait.waiting {
		return min(sourcePoll, m.s.memInterval())
	}
	return m.s.memInterval()
}

// tryOpen opens the awaited source; it reports whether the loop monitors it now. A
// source that opens but has no memory yet (a RAM file created but not yet sized) is
// not taken.
func (m *memLoop) tryOpen() bool {
	if state, _ := m.file.check(); state == sourceGone && m.file.domid >= 0 && !m.file.granted {
		// A xen: target's domain that does not exist (xenstore says so) is not back,
		// even if its frames still map: a destroyed domain lingers while mappings of
		// it (dom0's, another tool's) hold its pages.
		return false
	}
	src, sf, err := m.s.openTracked(m.file.spec, m.file.layout)
	if err == nil && totalSize(src.Ranges()) == 0 {
		src.Close()
		err = errors.New("it holds no memory yet")
	}
	if err != nil {
		if msg := err.Error(); msg != m.wait.lastErr {
			m.wait.lastErr = msg
			if m.file.granted && awaitable(m.file, err) {
				// the reason changes (no grant yet, the granted domain is gone): said
				// in the state, as at start
				reason := missingText(m.file.spec, err)
				m.s.log.Warn("waiting for the granted Xen domain", "source", m.file.spec, "reason", reason)
				m.s.setState(control.StateWaiting, reason, nil)
			} else if !errors.Is(err, fs.ErrNotExist) {
				m.s.log.Warn("memory source present but cannot be opened yet", "source", m.file.spec, "err", err)
			}
		}
		return false
	}
	m.wait.stopWatching()
	m.wait.waiting = false
	m.src, m.file = src, sf
	cond, sev, what := "appeared", alert.SevInfo, "appeared"
	if m.gone {
		cond, what = "back", "is back"
	}
	m.gone = false
	m.s.setState(control.StateMonitoring, "memory source "+what, nil)
	m.s.emit(alert.Health(m.s.clk.Now(), sev, "memory-source", cond,
		fmt.Sprintf("memory source %s %s: monitoring %s", m.file.spec, what, m.s.currentTarget().Name)))
	return true
}

func totalSize(rs []memscan.Range) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.Size
	}
	return n
}

// checkSource runs before each pass. It reports whether a pass may run now: it opens an
// awaited source that appeared, reopens a replaced one, and on a removed one alerts,
// releases the mapping (a removed RAM file's memory is freed only when unmapped) and
// waits for the source to come back.
func (m *memLoop) checkSource() bool {
	if m.wait.waiting {
		return m.tryOpen()
	}
	state, err := m.file.check()
	if err != nil && !m.aliveUnknown {
		// Said once per source: without an answer a destroyed target is not noticed.
		m.s.log.Warn("cannot tell whether the target's Xen domain still exists; monitoring on", "source", m.file.spec, "err", err)
	}
	m.aliveUnknown = err != nil
	if state != sourceGone && !m.vanished.IsZero() {
		m.s.log.Info("the target's Xen domain answers again", "source", m.file.spec)
		m.vanished = time.Time{}
	}
	switch state {
	case sourceGone:
		if m.file.domid >= 0 {
			// xl destroys a migrated target's source domain when the destination
			// has it, which can be before the coordinator's prepare reaches us: the
			// domain gone then is the migration's end, not an attack. The mapping
			// (which still holds the pages) is kept and no pass runs, for a prepare
			// to fingerprint it; without one, this is alerted as before.
			now := m.s.clk.Now()
			if m.vanished.IsZero() {
				m.vanished = now
				m.s.log.Warn("the target's Xen domain no longer exists: alerting unless a prepare comes (a migration's end)",
					"source", m.file.spec, "domid", m.file.domid, "within", xenVanishGrace)
				m.s.status("Xen domain %d gone: a migration's end? alerting in %v unless prepare comes", m.file.domid, xenVanishGrace)
			}
			if now.Sub(m.vanished) < xenVanishGrace {
				return false
			}
			m.vanished = time.Time{}
		}
		m.gone = true
		m.startWaiting()
		what := "was removed (the target VM stopped?)"
		if m.file.granted {
			what = fmt.Sprintf("is gone: Xen domain %d (domainm/target) no longer exists (the target was destroyed or crashed?); its frames are unmapped; waiting for dom0 to grant the target again", m.file.domid)
		} else if m.file.domid >= 0 {
			what = fmt.Sprintf("is gone: Xen domain %d no longer exists (the target was destroyed or crashed?); its frames are unmapped", m.file.domid)
		}
		m.s.setState(control.StateWaiting, fmt.Sprintf("memory source %s %s", m.file.spec, what), nil)
		m.s.emit(alert.Health(m.s.clk.Now(), alert.SevHigh, "memory-source", "gone",
			fmt.Sprintf("memory source %s %s: not monitoring until it is back", m.file.spec, what)))
		return false
	case sourceReplaced:
		src, sf, err := m.s.openTracked(m.file.spec, m.file.layout)
		if err != nil {
			m.s.log.Warn("memory source replaced but cannot be opened yet", "source", m.file.spec, "err", err)
			return false
		}
		m.src.Close()
		m.src, m.file = src, sf
		m.driver.Forget()
		m.guest.reset() // the restarted guest has a new layout (KASLR)
		m.guestAlerted = false
		m.cursor, m.partial = 0, map[string]detectors.Finding{}
		m.spots.reset()
		m.s.emit(alert.Health(m.s.clk.Now(), alert.SevMedium, "memory-source", "replaced",
			fmt.Sprintf("memory source %s was replaced (the target VM restarted?): monitoring the new one", m.file.spec)))
	}
	return true
}
