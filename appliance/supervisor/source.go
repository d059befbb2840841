package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/domainm/domainm/appliance/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
)

// sourceFile remembers which file a file: or elf: source was opened from, so that the
// memory loop notices the target's RAM file being removed (the VM stopped) or replaced
// (the VM restarted with a new file at the same path). An open mapping of a removed
// file stays readable: without this check the supervisor would go on scanning a dead
// guest's memory and never see the new one.
type sourceFile struct {
	spec, layout string
	path         string
	info         os.FileInfo // nil for sources that are not files (xen:)
}

func newSourceFile(spec, layout string) sourceFile {
	sf := sourceFile{spec: spec, layout: layout}
	if kind, path, ok := strings.Cut(spec, ":"); ok && (kind == "file" || kind == "elf") {
		sf.path = path
	}
	return sf
}

// openTracked opens spec and records the file it came from. The file is looked at
// before and after the open, and the open is retried once if it changed in between.
func (s *Supervisor) openTracked(spec, layout string) (memscan.Source, sourceFile, error) {
	sf := newSourceFile(spec, layout)
	for try := 0; ; try++ {
		before, _ := sf.stat()
		src, err := s.deps.OpenSource(spec, layout)
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

func (sf sourceFile) stat() (os.FileInfo, error) {
	if sf.path == "" {
		return nil, nil
	}
	return os.Stat(sf.path)
}

// sourceState is what checkSource found.
type sourceState int

const (
	sourceSame     sourceState = iota
	sourceGone                 // the file is no longer there
	sourceReplaced             // another file is there now
)

func (sf sourceFile) check() sourceState {
	if sf.info == nil {
		return sourceSame
	}
	fi, err := sf.stat()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sourceGone
	case err != nil:
		return sourceSame // cannot tell; the pass will report read errors if any
	case !os.SameFile(fi, sf.info):
		return sourceReplaced
	}
	return sourceSame
}

// checkSource runs before each pass. It reports whether a pass may run now, reopening
// a replaced source and alerting (once) a removed one.
func (m *memLoop) checkSource() bool {
	switch m.file.check() {
	case sourceGone:
		if !m.gone {
			m.gone = true
			m.s.m.up.Set(0)
			m.s.emit(alert.Health(m.s.clk.Now(), alert.SevHigh, "memory-source", "gone",
				fmt.Sprintf("memory source %s was removed (the target VM stopped?): no memory passes until it is back", m.file.spec)))
		}
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
		m.cursor, m.partial = 0, map[string]detectors.Finding{}
		m.s.emit(alert.Health(m.s.clk.Now(), alert.SevMedium, "memory-source", "replaced",
			fmt.Sprintf("memory source %s was replaced (the target VM restarted?): monitoring the new one", m.file.spec)))
	}
	if m.gone {
		m.gone = false
		m.s.m.up.Set(1)
		m.s.emit(alert.Health(m.s.clk.Now(), alert.SevInfo, "memory-source", "back",
			fmt.Sprintf("memory source %s is back", m.file.spec)))
	}
	return true
}
