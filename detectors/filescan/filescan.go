package filescan

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
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

// Detector is the Finding.Detector of file matches.
const Detector = "yara-file"

// DefaultMaxSize bounds what one worker holds in memory (Loki and THOR skip large
// files too): memory is at most workers × max size.
const DefaultMaxSize = 64 << 20

// Timeout bounds one file's scan, so a pathological rule cannot hang a check.
const Timeout = 60 * time.Second

// Opener is what the scan needs of a filesystem; diskscan.FS has it.
type Opener interface {
	Open(path string) (io.ReadCloser, error)
}

// File is one regular file to scan, as the walk or the baseline describes it.
type File struct {
	Path string
	Size int64
	UID  uint32
}

// PathError is a file that could not be read or scanned.
type PathError struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

// Scanner runs YARA over guest files. Set the exported fields, then call Run, ScanAll
// or ScanChanged once; Result holds what it found.
type Scanner struct {
	FS      Opener
	Rules   *yara.Rules
	MaxSize int64 // files larger are skipped (Result.Skipped)
	Workers int   // 0 means 1
	Target  detectors.Target
	Now     func() time.Time // default time.Now

	// Files and Bytes count what was scanned so far, for progress bars.
	Files, Bytes atomic.Int64

	owners owners

	mu  sync.Mutex
	res Result
}

// Result is what a scan found, each list sorted by path.
type Result struct {
	Findings []detectors.Finding
	Skipped  []string    // larger than MaxSize
	Errors   []PathError // unreadable, or the scan failed
}

// Result returns the findings, skipped files and errors; call it after the scan.
func (s *Scanner) Result() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res
}

// Run scans every file sent on files until it is closed (or ctx ends: the rest is
// drained unscanned and ctx's error returned).
func (s *Scanner) Run(ctx context.Context, files <-chan File) error {
	if s.Now == nil {
		s.Now = time.Now
	}
	workers := max(s.Workers, 1)
	// All scanners first: a failure must not leave the sender blocked on files.
	scanners := make([]*yara.Scanner, 0, workers)
	for range workers {
		sc, err := s.Rules.NewScanner(Timeout)
		if err != nil {
			for _, sc := range scanners {
				sc.Close()
			}
			for range files {
			}
			return err
		}
		scanners = append(scanners, sc)
	}
	s.owners.load(s.FS)
	var wg sync.WaitGroup
	for _, sc := range scanners {
		wg.Go(func() {
			defer sc.Close()
			var buf []byte
			for f := range files {
				if ctx.Err() != nil {
					continue // drain
				}
				buf = s.scanOne(sc, f, buf)
			}
		})
	}
	wg.Wait()
	s.sortResults()
	return ctx.Err()
}

func (s *Scanner) scanOne(sc *yara.Scanner, f File, buf []byte) []byte {
	if f.Size > s.MaxSize {
		s.mu.Lock()
		s.res.Skipped = append(s.res.Skipped, f.Path)
		s.mu.Unlock()
		return buf
	}
	data, err := readFile(s.FS, f.Path, f.Size, s.MaxSize, buf[:0])
	if err != nil {
		s.addError(f.Path, err)
		return data
	}
	s.Files.Add(1)
	s.Bytes.Add(int64(len(data)))
	name := path.Base(f.Path)
	sum := md5.Sum(data)
	vars := yara.FileVars{Filename: name, Filepath: path.Dir(f.Path), Extension: strings.ToLower(path.Ext(name)),
		Filetype: FileType(data), MD5: hex.EncodeToString(sum[:]), Owner: s.owners.name(f.UID)}
	if err := sc.SetFileVars(vars); err != nil {
		s.addError(f.Path, err)
		return data
	}
	ms, err := sc.Scan(data)
	if err != nil {
		s.addError(f.Path, fmt.Errorf("yara: %w", err))
	}
	if len(ms) > 0 {
		now := s.Now()
		s.mu.Lock()
		for _, m := range ms {
			s.res.Findings = append(s.res.Findings, detectors.Finding{
				Detector: Detector, Rule: m.Rule, Namespace: m.Namespace, Tags: m.Tags,
				Meta: m.Meta, Matches: m.Strings, Path: f.Path, Time: now, Target: s.Target,
			})
		}
		s.mu.Unlock()
	}
	return data
}

func (s *Scanner) addError(p string, err error) {
	s.mu.Lock()
	s.res.Errors = append(s.res.Errors, PathError{Path: p, Error: err.Error()})
	s.mu.Unlock()
}

func (s *Scanner) sortResults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := s.res.Findings
	sort.Slice(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Rule < b.Rule
	})
	sort.Strings(s.res.Skipped)
	sort.Slice(s.res.Errors, func(i, j int) bool { return s.res.Errors[i].Path < s.res.Errors[j].Path })
}

// readFile reads a whole guest file into buf, never more than max bytes even if the
// file grows while it is read.
func readFile(fsys Opener, p string, size, max int64, buf []byte) ([]byte, error) {
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

// FileType names a few formats by their magic bytes, like Loki's filetype variable:
// ELF, EXE, ZIP, GZIP, PDF, SCRIPT or UNKNOWN.
func FileType(b []byte) string {
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

// ScanAll walks the whole filesystem and scans every regular file; per-path walk
// errors are recorded and the walk goes on. It returns the entries walked.
func (s *Scanner) ScanAll(ctx context.Context, fsys diskscan.FS) (walked int64, err error) {
	files := make(chan File, max(s.Workers, 1)*4)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, files) }()
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
			case files <- File{Path: p, Size: e.Size, UID: e.UID}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	close(files)
	runErr := <-done
	if walkErr != nil {
		return walked, fmt.Errorf("walking filesystem: %w", walkErr)
	}
	return walked, runErr
}
