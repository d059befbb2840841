// Package syncpoint co-migrates a target VM and Domain M through the four sync points
// of DESIGN.md, so that the target never runs while Domain M is not monitoring it:
//
//   - P1: Domain M keeps running until the target has stopped for its final stop-and-copy.
//   - P2: the stopped target waits (held at QEMU's pre-switchover) until Domain M's
//     migration has finished.
//   - P3: at the destination, Domain M waits until the target has arrived.
//   - P4: the target stays paused until Domain M runs and the supervisor answers resume
//     with "monitoring".
//
// P1 on QEMU: QEMU stops a VM on its own once pre-copy converges, i.e. once the bytes
// still dirty fall below measured bandwidth × downtime-limit. Domain M's stream runs
// with downtime-limit 1 ms and a capped max-bandwidth, so its threshold is at most
// rate/1000 bytes; while its first pass is not done, at least the unsent part of its RAM
// is still dirty. The coordinator polls Domain M's remaining bytes and, before they fall
// to a margin that a full-rate burst could cross before the next poll, throttles its
// stream to a crawl ("hold"): Domain M cannot converge, hence cannot stop, before the
// target stops. Then it raises Domain M's limits and Domain M converges at once. See
// migrate-hooks/README.md.
//
// Where the hypervisor cannot hold a stopped VM before its switchover (Xen's xl/libxl has
// neither a pre-copy policy hook nor a pre-switchover pause), Sequential mode keeps the
// invariant by order instead: the target migrates first and arrives paused, Domain M
// monitors it until it stops for its last copy (P1), is told to quiesce then, and
// migrates after the target's copy has left (P2, the target stopped meanwhile); P3 and
// P4 are as in Sync. Domain M's whole migration falls into the target's downtime.
//
// The hypervisor operations the coordinator needs are the VM interface below; the QEMU
// implementation is host.VM (over QMP), libvirt's is virt.Domain, Xen's (xl over ssh)
// xenmig's domain.
package syncpoint

import (
	"context"
	"log/slog"
	"time"
)

// Event is a lifecycle event of one hypervisor process, timestamped by the hypervisor.
type Event struct {
	Name   string // "STOP", "RESUME", "SHUTDOWN", "MIGRATION"
	Status string // for MIGRATION: "active", "pre-switchover", "completed", "failed", ...
	Time   time.Time
	// Detail says how the event was observed where the hypervisor does not report it
	// itself (e.g. "suspended for its last copy"); it goes into the timeline.
	Detail string
}

// Progress is the state of an outgoing migration.
type Progress struct {
	Status    string
	Total     int64 // bytes of RAM covered by the stream
	Remaining int64 // bytes still dirty
	Error     string
	// TotalTime and Downtime as the hypervisor reports them (0 until it has filled them in).
	TotalTime, Downtime time.Duration
}

// Params are migration parameters; zero fields are left alone.
type Params struct {
	MaxBandwidth  int64         // bytes/s
	DowntimeLimit time.Duration // ≥ 1ms
}

// VM is one hypervisor process (a source or destination copy of a VM).
type VM interface {
	Where() string // e.g. "src/target"
	SetCapabilities(ctx context.Context, caps map[string]bool) error
	SetParameters(ctx context.Context, p Params) error
	Migrate(ctx context.Context, uri string) error
	Progress(ctx context.Context) (Progress, error)
	// ContinueSwitchover releases an outgoing migration held at pre-switchover.
	ContinueSwitchover(ctx context.Context) error
	CancelMigration(ctx context.Context) error
	Cont(ctx context.Context) error
	Stop(ctx context.Context) error
	Running(ctx context.Context) (bool, error)
	// WaitEvent waits for the first event at index >= from that matches.
	WaitEvent(ctx context.Context, from int, match func(Event) bool) (Event, int, error)
	Events() []Event
}

// Preparer is a source whose migration has a slow first step (libvirt's Begin3 and
// Prepare3 start the destination QEMU): the coordinator prepares both VMs before it starts
// either stream, so that both start together (else the target could finish its whole
// migration while Domain M's destination is still starting, and wait for all of Domain M's
// migration at P2).
type Preparer interface {
	Prepare(ctx context.Context, uri string) error
}

// Committer is a source that its hypervisor keeps, paused, after its migration completed
// until told the migration is final (libvirt's Confirm phase). The coordinator commits
// both sources once the pair runs at the destination; until then a rollback can resume
// them.
type Committer interface {
	Commit(ctx context.Context) error
}

// Binder is a supervisor whose destination needs a step once both VMs have arrived and
// before Domain M runs there: on Xen, dom0 grants Domain M privilege over the target's
// new domain (P3/P4). It is called before Domain M's destination is resumed.
type Binder interface {
	BindDestination(ctx context.Context) error
}

// Supervisor is Domain M's supervisor as the coordinator drives it: Prepare returns once
// it is quiesced; Resume once it monitors the target at the destination (the caller binds
// the destination's memory source); ResumeAtSource once it monitors the target at the
// source again (rollback); Monitoring reports whether it monitors now (after a prepare
// that failed, it may never have quiesced).
type Supervisor interface {
	Prepare(ctx context.Context) error
	Resume(ctx context.Context) error
	ResumeAtSource(ctx context.Context) error
	Monitoring(ctx context.Context) (bool, error)
}

// Side is one VM of the pair: its source and destination processes and the URI the
// destination listens on.
type Side struct {
	Src, Dst VM
	URI      string
	MemBytes int64
}

// Mode selects how the pair migrates.
type Mode int

const (
	// Sync: both streams at full rate; Domain M held at P1 if it would finish first.
	Sync Mode = iota
	// Paced: Sync, plus both streams paced in proportion to RAM sizes so that they reach
	// stop-and-copy together.
	Paced
	// NoSync: two independent migrations started together (the published baseline).
	NoSync
	// Sequential: the target first, Domain M after the target's last copy has left, for
	// hypervisors without a pre-switchover hold (Xen); see the package doc.
	Sequential
)

func (m Mode) String() string { return [...]string{"sync", "paced", "nosync", "sequential"}[m] }

// Config tunes a co-migration. Zero values take the defaults noted.
type Config struct {
	Mode Mode
	// MaxBandwidth caps each stream (bytes/s); default 10 GiB/s, i.e. the link decides.
	MaxBandwidth int64
	// LinkBandwidth is the bytes/s both streams share, for Paced; 0: estimated from the
	// first 500 ms of the migration.
	LinkBandwidth int64
	// Timeouts of each phase: P1 (the target stops), P2 (Domain M finishes), P3 (the
	// target arrives), Handshake (each supervisor call). Defaults 10 min, 5 min, 2 min, 10 s.
	P1, P2, P3, Handshake time.Duration
	// Call bounds one hypervisor call made while cleaning up or checking a state; default
	// 5 s (an xl command over ssh to a nested host takes longer).
	Call time.Duration
	// Poll is the interval at which Domain M's stream is watched during P1; default 5 ms.
	Poll time.Duration
	Log  *slog.Logger
	// Alert is called once with the error when a migration fails (after rollback).
	Alert func(error)
}

func (c *Config) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.P1, 10*time.Minute)
	set(&c.P2, 5*time.Minute)
	set(&c.P3, 2*time.Minute)
	set(&c.Handshake, 10*time.Second)
	set(&c.Call, 5*time.Second)
	set(&c.Poll, 5*time.Millisecond)
	if c.MaxBandwidth == 0 {
		c.MaxBandwidth = 10 << 30
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}
