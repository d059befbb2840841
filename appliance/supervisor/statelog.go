package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// stateLog appends one JSON line per state change to STATE_DIR/events.jsonl and syncs
// it, so the migration coordinator's invariant check (never unmonitored while the target
// runs) can read exact timestamps, even after a crash.
type stateLog struct {
	mu sync.Mutex
	f  *os.File
}

// StateRecord is one line of the state log.
type StateRecord struct {
	Time   string  `json:"time"` // RFC 3339 with nanoseconds, UTC
	State  string  `json:"state"`
	Reason string  `json:"reason,omitempty"`
	Source string  `json:"source,omitempty"`
	Cursor *uint64 `json:"cursor,omitempty"`
	Host   string  `json:"host,omitempty"`
	PID    int     `json:"pid"`
}

func openStateLog(path string) (*stateLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening state log: %w", err)
	}
	return &stateLog{f: f}, nil
}

func (l *stateLog) write(t time.Time, r StateRecord) error {
	r.Time = t.UTC().Format(time.RFC3339Nano)
	r.PID = os.Getpid()
	b, _ := json.Marshal(r)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return err
	}
	return l.f.Sync()
}

func (l *stateLog) close() error { return l.f.Close() }
