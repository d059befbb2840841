// Package virt is the coordinator's libvirt driver: it co-migrates a pair of
// libvirt-managed VMs through syncpoint's hypervisor operations, driving libvirt's five
// migration phases itself over libvirt's RPC protocol (github.com/digitalocean/go-libvirt,
// pure Go).
//
// Why the phases by hand: libvirt enables QEMU's pause-before-switchover itself and sends
// migrate-continue about 1 ms after QEMU reports pre-switchover, so a client cannot hold
// a source there. But after Perform3 returns, the source QEMU stays alive and paused until
// Confirm3, and Finish3 with VIR_MIGRATE_PAUSED leaves the destination paused. So:
//
//   - Prepare (syncpoint.Preparer, for both VMs before either stream): Begin3 at the
//     source, Prepare3 at the destination, whose QEMU starts paused and listening.
//   - Migrate: Perform3 in the background; when it returns, Finish3 (paused) at once.
//     QEMU's own MIGRATION, STOP and RESUME events (with QEMU's timestamps) are the VM's
//     events.
//   - P2 is strict: the target, stopped by its own convergence, cannot run anywhere until
//     the coordinator resumes its destination (Cont) or rolls it back (Cont at the source
//     = Confirm3 cancelled, which resumes it there; its destination is destroyed).
//   - Commit (after P4): Confirm3 at the source, which ends the paused source.
//   - P1 stays a hold: virDomainMigrateSetMaxSpeed (whole MiB/s) and SetMaxDowntime during
//     the job, virDomainGetJobStats polls.
//
// Domain M's view of the target must not travel in Domain M's stream. On raw QMP it is
// an nvdimm skipped with x-ignore-shared; under libvirt 9.0 that cannot work: libvirt does
// not know x-ignore-shared, the capability must be set on the destination QEMU too, and
// libvirt allows no other job (so no monitor passthrough) on an incoming domain between
// Prepare3 and Finish3; QEMU 7.2 refuses to unplug an nvdimm ("nvdimm device hot unplug
// is not supported yet"), so it cannot be detached at prepare either. So the view is a
// read-only virtio disk over the target's RAM file (image/libvirt/domm.xml): disks are
// not part of the migration stream, it is never written, and ViewPath points the
// destination copy at the destination target's RAM file. Domain M reads it with O_DIRECT
// (its own page cache would go stale). Migrate refuses a Domain M that still has a memory
// device. Cost: nothing in P4 or the target's downtime (nothing to detach or attach).
//
// Events: go-libvirt drops QEMU monitor events that carry no data (STOP, RESUME); the
// connection is tapped (tap.go) and those events decoded here (events.go).
package virt

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// Poll is the interval at which the coordinator should watch a libvirt source during P1
// (syncpoint.Config.Poll): each poll is an RPC to libvirtd, then QEMU, slower than QMP's,
// and the hold's margin must cover what Domain M sends between polls.
const Poll = 20 * time.Millisecond

// Host is one libvirtd, with the QEMU monitor events of all its domains recorded from
// the moment it is dialled.
type Host struct {
	Name string // "src", "dst": the first part of a VM's Where
	URI  string
	lv   *golibvirt.Libvirt
	log  *slog.Logger

	mu   sync.Mutex
	logs map[string]*eventLog // by domain name
}

// Dial connects to the libvirtd of uri: qemu:///system (the default socket),
// qemu+unix:///system?socket=PATH, or qemu+tcp://HOST:PORT/system.
func Dial(name, uri string, log *slog.Logger) (*Host, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("libvirt URI %q: %w", uri, err)
	}
	h := &Host{Name: name, URI: uri, log: log, logs: map[string]*eventLog{}}
	d := &tapDialer{network: "unix", addr: "/run/libvirt/libvirt-sock", onEvent: h.record,
		onError: func(err error) { log.Warn("dropped an event", "host", name, "err", err) }}
	switch tr, _ := strings.CutPrefix(u.Scheme, "qemu"); tr {
	case "", "+unix":
		if s := u.Query().Get("socket"); s != "" {
			d.addr = s
		}
	case "+tcp":
		port := u.Port()
		if port == "" {
			port = "16509"
		}
		d.network, d.addr = "tcp", u.Hostname()+":"+port
	default:
		return nil, fmt.Errorf("libvirt URI %q: transport %q not supported (qemu:///, qemu+unix, qemu+tcp)", uri, u.Scheme)
	}
	h.lv = golibvirt.NewWithDialer(d)
	if err := h.lv.ConnectToURI(golibvirt.RemoteURI(u)); err != nil {
		return nil, fmt.Errorf("connecting to libvirt at %s: %w", uri, err)
	}
	// All domains, all events: a destination domain does not exist yet when we register.
	if _, err := h.lv.QEMUConnectDomainMonitorEventRegister(nil, nil, 0); err != nil {
		h.lv.Disconnect()
		return nil, fmt.Errorf("%s: registering for QEMU monitor events: %w", uri, err)
	}
	return h, nil
}

// Close disconnects.
func (h *Host) Close() error { return h.lv.Disconnect() }

// Libvirt is the connection, for callers that need more than the driver does.
func (h *Host) Libvirt() *golibvirt.Libvirt { return h.lv }

func (h *Host) eventLog(domain string) *eventLog {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.logs[domain]
	if !ok {
		l = newEventLog()
		h.logs[domain] = l
	}
	return l
}

func (h *Host) record(e MonitorEvent) {
	h.log.Debug("qemu event", "host", h.Name, "domain", e.Domain, "event", e.Event, "details", e.Details, "time", e.Time)
	ev := syncpoint.Event{Name: e.Event, Status: e.Status(), Time: e.Time}
	if ev.Name == "MIGRATION" && (ev.Status == "completed" || ev.Status == "failed" || ev.Status == "cancelled") {
		h.log.Info("migration "+ev.Status, "where", h.Name+"/"+e.Domain, "at", stamp(e.Time))
	}
	h.eventLog(e.Domain).add(ev)
}

// domain looks a domain up by name.
func (h *Host) domain(name string) (golibvirt.Domain, error) {
	d, err := h.lv.DomainLookupByName(name)
	if err != nil {
		return d, fmt.Errorf("%s: domain %s: %w", h.Name, name, err)
	}
	return d, nil
}

// eventLog is one domain's events in arrival order; waiters are woken on each append.
type eventLog struct {
	mu      sync.Mutex
	events  []syncpoint.Event
	changed chan struct{}
}

func newEventLog() *eventLog { return &eventLog{changed: make(chan struct{})} }

func (l *eventLog) add(e syncpoint.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *eventLog) snapshot() ([]syncpoint.Event, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]syncpoint.Event(nil), l.events...), l.changed
}

var errNotPrepared = errors.New("no incoming migration prepared")

// MemBytes is a domain's maximum memory.
func (h *Host) MemBytes(name string) (int64, error) {
	d, err := h.domain(name)
	if err != nil {
		return 0, err
	}
	_, maxKiB, _, _, _, err := h.lv.DomainGetInfo(d)
	if err != nil {
		return 0, fmt.Errorf("%s: domain %s: %w", h.Name, name, err)
	}
	return int64(maxKiB) << 10, nil
}
