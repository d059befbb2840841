package proto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// StateLogFile is the supervisor's state log in its state folder: one JSON line per
// state change or change of health problems, written when it happens. The migration
// coordinator's invariant check (the target never runs while Domain M is not
// monitoring) reads it.
const StateLogFile = "events.jsonl"

// StateRecord is one line of the state log.
type StateRecord struct {
	Time   string `json:"time"`  // RFC 3339 with nanoseconds, UTC
	State  string `json:"state"` // one of the State* constants
	Reason string `json:"reason,omitempty"`
	Source string `json:"source,omitempty"`          // memory source spec at that moment
	Cursor *Addr  `json:"cursor,omitempty"`          // scan cursor (prepare, resume): "0x..."; an older log's integer reads too
	Host   string `json:"hypervisor_host,omitempty"` // the target's; an older log's "host" reads too
	PID    int    `json:"pid"`
	// Healthy and Problems are the health model at that moment (see Health): a line is
	// written when the state changes and when the set of problems does.
	Healthy  bool     `json:"healthy"`
	Problems []string `json:"problems,omitempty"` // problem codes, sorted

	At time.Time `json:"-"` // Time, parsed by ReadStateLog
}

// UnmarshalJSON reads a record, the target's host from "hypervisor_host" or, in a log
// written by a build before the rename, "host".
func (r *StateRecord) UnmarshalJSON(b []byte) error {
	type plain StateRecord
	var v struct {
		plain
		OldHost string `json:"host"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = StateRecord(v.plain)
	if r.Host == "" {
		r.Host = v.OldHost
	}
	return nil
}

// ReadStateLog reads a state log.
func ReadStateLog(path string) ([]StateRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []StateRecord
	for i, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r StateRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return out, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		if r.At, err = time.Parse(time.RFC3339Nano, r.Time); err != nil {
			return out, fmt.Errorf("%s:%d: time: %w", path, i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}
