package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/diskscan"
)

// diskMaxFileSize bounds what one YARA worker holds in memory (Loki and THOR skip
// large files too): memory is at most workers × max-file-size.
const diskMaxFileSize = 64 << 20

// diskYaraTimeout bounds one file's scan, so a pathological rule cannot hang a check.
const diskYaraTimeout = 60 * time.Second

// guestOpener is what the YARA file scan needs of a filesystem.
type guestOpener interface {
	Open(path string) (io.ReadCloser, error)
}

// guestFile is one regular file to scan.
type guestFile struct {
	path string
	size int64
}

// guestFileScanner runs YARA over guest files, one libyara scanner per worker.
type guestFileScanner struct {
	fsys    guestOpener
	rules   *yara.Rules
	maxSize int64
	workers int
	target  detectors.Target
	now     func() time.Time

	files, bytes atomic.Int64 // progress

	mu       sync.Mutex
	findings []detectors.Finding
	skipped  []string        // larger than maxSize
	errors   []diskPathError // unreadable or scan failure
}

type diskPathError struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

// run scans every item sent on items until it is closed.
func (s *guestFileScanner) run(ctx context.Context, items <-chan guestFile) error {
	if s.now == nil {
		s.now = time.Now
	}
	// All scanners first: a failure must not leave the sender blocked on items.
	scanners := make([]*yara.Scanner, 0, s.workers)
	for range s.workers {
		sc, err := s.rules.NewScanner(diskYaraTimeout)
		if err != nil {
			for _, sc := range scanners {
				sc.Close()
			}
			for range items {
			}
			return err
		}
		scanners = append(scanners, sc)
	}
	var wg sync.WaitGroup
	for _, sc := range scanners {
		wg.Go(func() {
			defer sc.Close()
			var buf []byte
			for it := range items {
				if ctx.Err() != nil {
					continue // drain
				}
				buf = s.scanOne(sc, it, buf)
			}
		})
	}
	wg.Wait()
	s.sortResults()
	return ctx.Err()
}

func (s *guestFileScanner) scanOne(sc *yara.Scanner, it guestFile, buf []byte) []byte {
	if it.size > s.maxSize {
		s.mu.Lock()
		s.skipped = append(s.skipped, it.path)
		s.mu.Unlock()
		return buf
	}
	data, err := readGuestFile(s.fsys, it.path, it.size, s.maxSize, buf[:0])
	if err != nil {
		s.addError(it.path, err)
		return data
	}
	s.files.Add(1)
	s.bytes.Add(int64(len(data)))
	name := path.Base(it.path)
	ext := strings.ToLower(path.Ext(name))
	if err := sc.SetVars(name, path.Dir(it.path), ext, guestFileType(data)); err != nil {
		s.addError(it.path, err)
		return data
	}
	ms, err := sc.Scan(data)
	if err != nil {
		s.addError(it.path, fmt.Errorf("yara: %w", err))
	}
	if len(ms) > 0 {
		now := s.now()
		s.mu.Lock()
		for _, m := range ms {
			s.findings = append(s.findings, detectors.Finding{
				Detector: "yara-file", Rule: m.Rule, Namespace: m.Namespace, Tags: m.Tags,
				Meta: m.Meta, Matches: m.Strings, Path: it.path, Time: now, Target: s.target,
			})
		}
		s.mu.Unlock()
	}
	return data
}

func (s *guestFileScanner) addError(p string, err error) {
	s.mu.Lock()
	s.errors = append(s.errors, diskPathError{Path: p, Error: err.Error()})
	s.mu.Unlock()
}

func (s *guestFileScanner) sortResults() {
	sort.Slice(s.findings, func(i, j int) bool {
		a, b := s.findings[i], s.findings[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Rule < b.Rule
	})
	sort.Strings(s.skipped)
	sort.Slice(s.errors, func(i, j int) bool { return s.errors[i].Path < s.errors[j].Path })
}

// readGuestFile reads a whole guest file into buf, never more than max bytes even if the
// file grows while it is read.
func readGuestFile(fsys guestOpener, p string, size, max int64, buf []byte) ([]byte, error) {
	rc, err := fsys.Open(p)
	if err != nil {
		return buf, err
	}
	defer rc.Close()
	if int64(cap(buf)) < size {
		buf = make([]byte, 0, size)
	}
	w := bytes.NewBuffer(buf)
	n, err := io.Copy(w, io.LimitReader(rc, max+1))
	if err != nil {
		return w.Bytes(), fmt.Errorf("reading at offset %d: %w", n, err)
	}
	if n > max {
		return w.Bytes()[:0], fmt.Errorf("file grew beyond %d bytes while it was read", max)
	}
	return w.Bytes(), nil
}

// guestFileType names a few formats by their magic bytes, like Loki's filetype variable.
func guestFileType(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "ELF"
	case bytes.HasPrefix(b, []byte("MZ")):
		return "EXE"
	case bytes.HasPrefix(b, []byte("PK\x03\x04")):
		return "ZIP"
	case bytes.HasPrefix(b, []byte("\x1f\x8b")):
		return "GZIP"
	case bytes.HasPrefix(b, []byte("%PDF")):
		return "PDF"
	case bytes.HasPrefix(b, []byte("#!")):
		return "SCRIPT"
	}
	return "UNKNOWN"
}

// scanAllFiles walks the whole filesystem and scans every regular file; per-path walk
// errors are recorded and the walk goes on.
func (s *guestFileScanner) scanAllFiles(ctx context.Context, fsys diskscan.FS) (walked int64, err error) {
	items := make(chan guestFile, s.workers*4)
	done := make(chan error, 1)
	go func() { done <- s.run(ctx, items) }()
	walkErr := fsys.Walk(ctx, "/", func(p string, e *diskscan.Entry, err error) error {
		walked++
		if e == nil {
			if err != nil {
				s.addError(p, err)
			}
			return nil
		}
		if e.Type == diskscan.Regular {
			select {
			case items <- guestFile{path: p, size: e.Size}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	close(items)
	runErr := <-done
	if walkErr != nil {
		return walked, fmt.Errorf("walking filesystem: %w", walkErr)
	}
	return walked, runErr
}
