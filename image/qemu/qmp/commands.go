package qmp

import (
	"context"
	"encoding/json"
	"errors"
)

// Status is the reply of query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // "running", "paused", "inmigrate", "postmigrate", ...
}

// QueryStatus returns the VM's run state.
func (m *Monitor) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := m.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// RAMStats is the "ram" part of query-migrate.
type RAMStats struct {
	Transferred      int64   `json:"transferred"`
	Remaining        int64   `json:"remaining"`
	Total            int64   `json:"total"`
	Duplicate        int64   `json:"duplicate"`
	Normal           int64   `json:"normal"`
	DirtySyncCount   int64   `json:"dirty-sync-count"`
	DirtyPagesRate   int64   `json:"dirty-pages-rate"`
	Mbps             float64 `json:"mbps"`
	PageSize         int64   `json:"page-size"`
	PrecopyBytes     int64   `json:"precopy-bytes"`
	DowntimeBytes    int64   `json:"downtime-bytes"`
	PostcopyRequests int64   `json:"postcopy-requests"`
}

// MigrationInfo is the reply of query-migrate. Times are in milliseconds.
type MigrationInfo struct {
	Status           string    `json:"status"` // "", "setup", "active", "pre-switchover", "device", "completed", "failed", "cancelled", ...
	RAM              *RAMStats `json:"ram,omitempty"`
	TotalTime        int64     `json:"total-time"`
	ExpectedDowntime int64     `json:"expected-downtime"`
	Downtime         int64     `json:"downtime"`
	SetupTime        int64     `json:"setup-time"`
	ErrorDesc        string    `json:"error-desc"`
}

// QueryMigrate returns the state of the current or last migration.
func (m *Monitor) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var mi MigrationInfo
	err := m.Execute(ctx, "query-migrate", nil, &mi)
	return mi, err
}

// SetCapabilities sets migration capabilities, e.g. {"events": true}.
func (m *Monitor) SetCapabilities(ctx context.Context, caps map[string]bool) error {
	type cap struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	var cs []cap
	for k, v := range caps {
		cs = append(cs, cap{k, v})
	}
	return m.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": cs}, nil)
}

// Parameters are the migration parameters this project sets; nil fields are left alone.
type Parameters struct {
	MaxBandwidth  *int64 `json:"max-bandwidth,omitempty"`  // bytes per second
	DowntimeLimit *int64 `json:"downtime-limit,omitempty"` // milliseconds
}

// SetParameters sets migration parameters.
func (m *Monitor) SetParameters(ctx context.Context, p Parameters) error {
	return m.Execute(ctx, "migrate-set-parameters", p, nil)
}

// Migrate starts an outgoing migration to uri, e.g. "tcp:127.0.0.1:4444".
func (m *Monitor) Migrate(ctx context.Context, uri string) error {
	return m.Execute(ctx, "migrate", map[string]any{"uri": uri}, nil)
}

// MigrateIncoming starts listening for an incoming migration (with -incoming defer).
func (m *Monitor) MigrateIncoming(ctx context.Context, uri string) error {
	return m.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil)
}

// MigrateContinue releases a source held in state (e.g. "pre-switchover").
func (m *Monitor) MigrateContinue(ctx context.Context, state string) error {
	return m.Execute(ctx, "migrate-continue", map[string]any{"state": state}, nil)
}

// MigrateCancel cancels the current outgoing migration.
func (m *Monitor) MigrateCancel(ctx context.Context) error {
	return m.Execute(ctx, "migrate_cancel", nil, nil)
}

// Stop pauses the VM.
func (m *Monitor) Stop(ctx context.Context) error { return m.Execute(ctx, "stop", nil, nil) }

// Cont resumes the VM.
func (m *Monitor) Cont(ctx context.Context) error { return m.Execute(ctx, "cont", nil, nil) }

// Quit makes QEMU exit. The connection drops as QEMU goes, which is not an error here.
func (m *Monitor) Quit(ctx context.Context) error {
	err := m.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// MigrationStatus decodes the "status" of a MIGRATION event ("" for other events).
func (e Event) MigrationStatus() string {
	if e.Name != "MIGRATION" {
		return ""
	}
	var d struct {
		Status string `json:"status"`
	}
	json.Unmarshal(e.Data, &d)
	return d.Status
}
