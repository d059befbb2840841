package alert

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// fileSink appends JSON lines to a local file and fsyncs after each batch; events
// leave the spool only after the fsync. When the file would grow past max_bytes it
// is rotated: path.1 ... path.<keep>, oldest dropped.
type fileSink struct {
	cfg SinkConfig

	mu   sync.Mutex
	f    *os.File
	size int64
}

func newFileSink(cfg SinkConfig) (*fileSink, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
		return nil, fmt.Errorf("alert file folder: %w", err)
	}
	return &fileSink{cfg: cfg}, nil
}

func (s *fileSink) open() error {
	f, err := os.OpenFile(s.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	s.f, s.size = f, st.Size()
	return s.endLine()
}

// endLine ends a partial last line (from a write cut short before a crash) so that
// the next event starts on a line of its own.
func (s *fileSink) endLine() error {
	if s.size == 0 {
		return nil
	}
	r, err := os.Open(s.cfg.Path)
	if err != nil {
		return err
	}
	defer r.Close()
	var last [1]byte
	if _, err := r.ReadAt(last[:], s.size-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	n, err := s.f.Write([]byte{'\n'})
	s.size += int64(n)
	return err
}

func (s *fileSink) rotate() error {
	if err := s.f.Close(); err != nil {
		return err
	}
	s.f = nil
	for i := s.cfg.Keep - 1; i >= 1; i-- {
		old := fmt.Sprintf("%s.%d", s.cfg.Path, i)
		if _, err := os.Stat(old); err == nil {
			if err := os.Rename(old, fmt.Sprintf("%s.%d", s.cfg.Path, i+1)); err != nil {
				return err
			}
		}
	}
	if err := os.Rename(s.cfg.Path, s.cfg.Path+".1"); err != nil {
		return err
	}
	return s.open()
}

func (s *fileSink) send(_ context.Context, recs []record, evs []*Event) (int, []int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := s.open(); err != nil {
			return 0, nil, fmt.Errorf("opening alert file: %w", err)
		}
	}
	var buf []byte
	for _, rec := range recs {
		buf = append(append(buf, rec.data...), '\n')
	}
	if s.size > 0 && s.size+int64(len(buf)) > int64(s.cfg.MaxBytes) {
		if err := s.rotate(); err != nil {
			return 0, nil, fmt.Errorf("rotating alert file: %w", err)
		}
	}
	// A failed or short write may leave a partial line: the batch is written again
	// on a new line (endLine), so a reader skips a line that does not parse.
	n, err := s.f.Write(buf)
	s.size += int64(n)
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		s.f.Close()
		s.f = nil
		return 0, nil, fmt.Errorf("writing alert file: %w", err)
	}
	return len(recs), nil, nil
}

func (s *fileSink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		err := s.f.Close()
		s.f = nil
		return err
	}
	return nil
}
