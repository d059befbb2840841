package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/control"
)

// stateLog appends one JSON line per state change to STATE_DIR/events.jsonl, so the
// migration coordinator's invariant check (never unmonitored while the target runs)
// can read exact timestamps. The line is written at once (readers see it); the fsync
// that makes it survive a crash runs in the background, because prepare and resume are
// on the migration's critical path and an fsync costs milliseconds.
type stateLog struct {
	mu    sync.Mutex
	f     *os.File
	dirty chan struct{}
	done  chan struct{}
}

func openStateLog(path string) (*stateLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening state log: %w", err)
	}
	l := &stateLog{f: f, dirty: make(chan struct{}, 1), done: make(chan struct{})}
	go l.syncer()
	return l, nil
}

func (l *stateLog) syncer() {
	defer close(l.done)
	for range l.dirty {
		l.f.Sync()
	}
}

func (l *stateLog) write(t time.Time, r control.StateRecord) error {
	r.Time = t.UTC().Format(time.RFC3339Nano)
	r.PID = os.Getpid()
	b, _ := json.Marshal(r)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return err
	}
	select {
	case l.dirty <- struct{}{}:
	default: // a sync is pending; it covers this line too
	}
	return nil
}

func (l *stateLog) close() error {
	close(l.dirty)
	<-l.done
	if err := l.f.Sync(); err != nil {
		l.f.Close()
		return err
	}
	return l.f.Close()
}
