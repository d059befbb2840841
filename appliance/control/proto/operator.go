package proto

import "encoding/json"

// Operator commands: what domainm's own commands ask the running supervisor, beside
// the migration handshake.
//
//	{"id":1,"cmd":"alert-test","args":{"severity":"high","timeout_ms":10000}}
//
// answered with "alert_test": one SinkTest per configured sink. status answers with
// "detail" (StatusDetail) beside the fields above.
const (
	CmdAlertTest      = "alert-test"
	CmdBaselineAccept = "baseline-accept"
)

// BaselineAcceptArgs are baseline-accept's arguments: paths in the target's
// filesystem whose current state becomes the baseline, and who asks (audit).
type BaselineAcceptArgs struct {
	Paths []string `json:"paths"`
	By    string   `json:"by,omitempty"`
}

// BaselineAcceptResult is baseline-accept's answer.
type BaselineAcceptResult struct {
	Accepted  []string `json:"accepted"`  // taken into the baseline
	Unchanged []string `json:"unchanged"` // did not differ from the baseline: nothing to accept
}

// AlertTestArgs are alert-test's arguments.
type AlertTestArgs struct {
	Severity string `json:"severity,omitempty"` // the test event's level; default high
	// WaitMs bounds how long the supervisor waits for the sinks to deliver.
	WaitMs int64  `json:"wait_ms,omitempty"`
	By     string `json:"by,omitempty"` // who asks (user@host), for the event's message
}

// SinkTest is one sink's result of alert-test.
type SinkTest struct {
	Sink      string  `json:"sink"`
	Type      string  `json:"type"`
	Delivered bool    `json:"delivered"`
	Skipped   string  `json:"skipped,omitempty"` // not spooled for this sink, and why
	Error     string  `json:"error,omitempty"`   // why it was not delivered (the sink's last error)
	Seconds   float64 `json:"seconds"`
	// EventID is the test event's event.id; it is written under the alert schema's
	// name, "event":{"id":...}, and read from that or from "event_id", as builds before
	// it wrote it (MarshalJSON).
	EventID string `json:"-"`
}

type eventRef struct {
	ID string `json:"id"`
}

// MarshalJSON writes EventID as "event":{"id":...}, the alert schema's event.id.
func (s SinkTest) MarshalJSON() ([]byte, error) {
	type plain SinkTest
	v := struct {
		plain
		Event *eventRef `json:"event,omitempty"`
	}{plain: plain(s)}
	if s.EventID != "" {
		v.Event = &eventRef{s.EventID}
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads "event":{"id":...}, or "event_id" from a daemon of an older build.
func (s *SinkTest) UnmarshalJSON(b []byte) error {
	type plain SinkTest
	var v struct {
		plain
		Event *eventRef `json:"event"`
		OldID string    `json:"event_id"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = SinkTest(v.plain)
	s.EventID = v.OldID
	if v.Event != nil && v.Event.ID != "" {
		s.EventID = v.Event.ID
	}
	return nil
}

// StatusDetail is what domainm status prints: every field is always present, zero
// values included, so that a script (and an operator) can tell "none" from "not
// reported". Times are RFC 3339 ("" when it has not happened yet), ages and durations
// in seconds.
type StatusDetail struct {
	Version       string  `json:"version"`
	StartedAt     string  `json:"started_at"`
	UptimeSeconds float64 `json:"uptime_seconds"`

	Config ConfigStatus `json:"config"`
	Memory MemoryStatus `json:"memory"`
	Rules  RulesStatus  `json:"rules"`
	Disk   DiskStatus   `json:"disk"`
	Sinks  []SinkStatus `json:"sinks"`
}

// ConfigStatus is the configuration file and its reloads.
type ConfigStatus struct {
	Path         string   `json:"path"`
	LastReload   string   `json:"last_reload"`   // "" when never reloaded since the start
	ReloadError  string   `json:"reload_error"`  // the last reload's errors ("" when it worked)
	NeedsRestart []string `json:"needs_restart"` // keys changed in the file that only a restart applies
}

// MemoryStatus is the memory source and the last pass.
type MemoryStatus struct {
	Source           string  `json:"source"`
	Layout           string  `json:"layout"`
	IntervalSeconds  float64 `json:"interval_seconds"`
	Passes           int     `json:"passes"` // complete passes since the start
	LastPassEnd      string  `json:"last_pass_end"`
	LastPassSeconds  float64 `json:"last_pass_seconds"`
	LastPassComplete bool    `json:"last_pass_complete"`
	Blocks           int     `json:"blocks"` // of the last pass
	BlocksScanned    int     `json:"blocks_scanned"`
	BlocksUnchanged  int     `json:"blocks_unchanged"`
	BlocksZero       int     `json:"blocks_zero"`
	BlocksUnscanned  int     `json:"blocks_unscanned"`
	BytesUnscanned   uint64  `json:"bytes_unscanned"`
	Findings         int     `json:"findings"` // open memory findings
	// Guest is what the supervisor knows of the guest behind the source: its kernel's
	// layout, derived at the first pass over each source (again after a resume).
	Guest GuestStatus `json:"guest"`
}

// GuestStatus is the guest's layout as the memory passes derived it. With OS "linux"
// memory matches name the processes and modules holding them and the virtual address
// spaces are scanned across page boundaries; with "unknown" only the physical scan
// runs; "" before the first pass over the current source.
type GuestStatus struct {
	OS        string `json:"os"`         // "linux", "unknown" or ""
	Kernel    string `json:"kernel"`     // the kernel's release
	Source    string `json:"source"`     // the memory source the layout was derived from
	DerivedAt string `json:"derived_at"` // when (RFC 3339), or when it was last tried in vain
	Processes int    `json:"processes"`  // processes listed in the last pass
	Seams     int    `json:"seams"`      // page boundaries of virtual address spaces the last pass scanned across
	Error     string `json:"error"`      // why the layout is unknown, or the last pass's listing error
}

// RulesStatus is the running rule set and its reloads.
type RulesStatus struct {
	Dir              string   `json:"dir"`
	Count            int      `json:"count"`
	Files            int      `json:"files"`
	ID               string   `json:"id"`
	Loaded           string   `json:"loaded"`             // when the running set was loaded
	LastReload       string   `json:"last_reload"`        // the last reload attempt ("" none since the start)
	LastReloadResult string   `json:"last_reload_result"` // ok, unchanged, failed, empty, partial (files left out)
	Reloads          int      `json:"reloads"`            // sets swapped in since the start
	FailedReloads    int      `json:"failed_reloads"`
	BrokenFiles      []string `json:"broken_files"` // FILE:LINE: error of each file that does not compile
	// Rule control (rules.disable, rules.exception in the configuration).
	Disabled         []string `json:"disabled"`
	Exceptions       []string `json:"exceptions"`
	SuppressedMemory int      `json:"suppressed_memory"` // findings left out by the last memory pass
	SuppressedDisk   int      `json:"suppressed_disk"`   // findings left out by the last disk check
}

// DiskStatus is the disk checks ("" image: none configured).
type DiskStatus struct {
	Image              string  `json:"image"`
	IntervalSeconds    float64 `json:"interval_seconds"`
	Checks             int     `json:"checks"` // successful checks since the start
	LastCheck          string  `json:"last_check"`
	Failing            bool    `json:"failing"`
	Baseline           string  `json:"baseline"`
	BaselineAgeSeconds float64 `json:"baseline_age_seconds"` // -1: no baseline yet
}

// SinkStatus is one alert sink.
type SinkStatus struct {
	Name             string  `json:"name"`
	Type             string  `json:"type"`
	Up               bool    `json:"up"`
	Spooled          int     `json:"spooled"`
	SpoolBytes       int64   `json:"spool_bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"` // of the oldest spooled alert; 0 when none
	HeldBack         int     `json:"held_back"`          // alerts its rate_limit held back since the start (delivered later)
	LastError        string  `json:"last_error"`
	LastDelivered    string  `json:"last_delivered"`
}
