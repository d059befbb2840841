// Package proto defines the messages of the supervisor's control protocol, once, for
// both of its ends: the supervisor's server (package appliance/control) and the
// migration coordinator's client (package migrate-hooks/control). It also defines the
// supervisor's state log, which the coordinator's invariant check reads.
//
// It imports only the standard library and holds no code that talks to anything, so
// the coordinator shipped to hypervisor hosts can import it without linking any of the
// appliance: migrate-hooks/internal/cli's deps test bans appliance/ from domainm-migrate except
// this one package, and checks that it stays a leaf. It lives under appliance/control
// because the supervisor serves the protocol and says what it means; the coordinator is
// one of its clients (DESIGN.md: migrate-hooks talks to the appliance only through this
// protocol).
//
// # Wire format
//
// JSON lines over a unix socket (a virtio-serial port in a QEMU Domain M; xenstore on
// Xen carries the same messages). One request per line, one response line per request,
// in order:
//
//	{"id":1,"cmd":"status"}
//	{"id":2,"cmd":"prepare"}
//	{"id":3,"cmd":"resume","args":{"source":"file:/dev/shm/x","layout":"flat","target":{"name":"web-1","uuid":"...","hypervisor_host":"dst","host":"dst"}}}
//
// answered by {"id":N,"ok":true,"state":"monitoring"|"quiesced"|"starting"|"waiting",...} or
// {"id":N,"ok":false,"error":"...","code":"guest_changed"|"bad_request"|...}. The id is
// echoed as it was sent.
//
// A guest-physical address (the "cursor") is a "0x..." string, the alert schema's
// form, for a request with "addr_form":"0x", which current clients send; without it an
// integer, which is what builds before it sent and can decode. Both forms are accepted
// when decoding (Addr), so peers of different builds work together during an upgrade.
//
// The target's hypervisor host is "hypervisor_host", the alert schema's name
// (domainm.target), in a response to a request with "host_form":"hypervisor_host",
// which current clients send; without it "host", the name builds before it sent and
// read. A request cannot know its peer's build, so resume's target carries the host
// under both names (ResumeArgs); the supervisor reads either (TargetInfo).
// NewRequest makes a request that asks for both current forms.
//
// # Stale requests
//
// A coordinator gives up on a request after a timeout and acts on its own (rolls the
// pair back), so a request carried out after that would contradict it: a resume to the
// destination obeyed after the coordinator restarted the target at the source leaves the
// target unwatched. prepare and resume may therefore carry
//
//	"timeout_ms": N   how long the coordinator still waits for the answer, as a duration:
//	                  the supervisor's clock is a guest's clock on another host, so an
//	                  absolute time could not be compared; the supervisor counts it from
//	                  its own monotonic receive time
//	"epoch": E        the coordinator's epoch: it learns the highest accepted one from
//	                  status ("epoch") and uses one more on each new connection, so a
//	                  request from an abandoned connection is older than every later one
//
// and the supervisor refuses, doing nothing, a request whose deadline passed or whose
// connection the coordinator has closed (code "expired") and one whose epoch is below an
// epoch it accepted already (code "stale"). It checks when it takes the request up and
// again just before it commits the change. A request that sat unread in the socket of a
// frozen supervisor gets its full timeout at wake-up (the receive time is then); what
// stops it is the closed connection (a coordinator closes a connection whose call timed
// out) and the epoch. On a transport without connections (a virtio-serial port) only
// the timeout and the epoch apply.
package proto

import "encoding/json"

// States the supervisor reports.
const (
	StateStarting   = "starting"
	StateMonitoring = "monitoring"
	StateQuiescing  = "quiescing"
	StateQuiesced   = "quiesced"
	StateResuming   = "resuming"
	StateStopping   = "stopping"
	StateStopped    = "stopped"
)

// Commands.
const (
	CmdStatus  = "status"
	CmdPrepare = "prepare"
	CmdResume  = "resume"
)

// Error codes in responses.
const (
	CodeBadRequest     = "bad_request"     // not JSON, missing or invalid fields
	CodeUnknownCommand = "unknown_command" // cmd not known
	CodeGuestChanged   = "guest_changed"   // resume: the memory is not the guest seen at prepare
	CodeWrongState     = "wrong_state"     // e.g. resume while monitoring
	CodeSource         = "source_error"    // resume: the memory source could not be opened
	CodeForbidden      = "forbidden"       // peer is neither root nor the server's user
	CodeExpired        = "expired"         // prepare/resume: deadline passed or requester gone; nothing done
	CodeStale          = "stale"           // prepare/resume: epoch below one accepted already; nothing done
	CodeInternal       = "internal"
)

// Request is one line from the client.
type Request struct {
	ID   json.RawMessage `json:"id,omitempty"`
	Cmd  string          `json:"cmd"`
	Args json.RawMessage `json:"args,omitempty"`
	// Epoch and TimeoutMs fence prepare and resume against staleness (see the package
	// doc); zero: none.
	Epoch     uint64 `json:"epoch,omitempty"`
	TimeoutMs int64  `json:"timeout_ms,omitempty"`
	// AddrForm AddrFormHex asks for addresses (the cursor) as "0x..." strings; without
	// it they are integers, as builds before it sent and decode (see Addr).
	AddrForm string `json:"addr_form,omitempty"`
	// HostForm HostFormHypervisor asks for the target's host as "hypervisor_host";
	// without it the response says "host", as builds before it sent and read.
	HostForm string `json:"host_form,omitempty"`
}

// HostFormHypervisor in Request.HostForm asks for the target's host under the alert
// schema's name, "hypervisor_host".
const HostFormHypervisor = "hypervisor_host"

// NewRequest is a request for cmd with the given id that asks for the current forms
// (addresses as "0x...", the target's host as "hypervisor_host"); a supervisor of an
// older build ignores what it does not know and answers in the forms it has, which
// Response decodes too. Every client builds its requests with it.
func NewRequest(id json.RawMessage, cmd string) Request {
	return Request{ID: id, Cmd: cmd, AddrForm: AddrFormHex, HostForm: HostFormHypervisor}
}

// Fenced reports whether cmd changes what the supervisor watches, so that it carries
// an epoch and a timeout (prepare and resume).
func Fenced(cmd string) bool { return cmd == CmdPrepare || cmd == CmdResume }

// ResumeArgs are resume's arguments: the memory source at the destination and the
// target's identity there.
type ResumeArgs struct {
	Source string     `json:"source"`           // memscan source spec, e.g. "file:/dev/shm/x"
	Layout string     `json:"layout,omitempty"` // e.g. "flat": file offset = guest-physical address
	Target TargetInfo `json:"target"`
}

// MarshalJSON writes the target's host under both names, "hypervisor_host" and "host":
// a supervisor of a build before the rename reads only "host", and the client cannot
// know its peer's build before it asks.
func (a ResumeArgs) MarshalJSON() ([]byte, error) {
	type plain ResumeArgs
	return json.Marshal(struct {
		plain
		Target bothHosts `json:"target"`
	}{plain(a), bothHosts{plainTarget(a.Target), a.Target.Host}})
}

type bothHosts struct {
	plainTarget
	OldHost string `json:"host,omitempty"`
}

type plainTarget TargetInfo // TargetInfo's fields without its methods

// TargetInfo is the target's identity as the coordinator knows it.
type TargetInfo struct {
	Name  string `json:"name,omitempty"`
	UUID  string `json:"uuid,omitempty"`
	Host  string `json:"hypervisor_host,omitempty"` // the hypervisor host it runs on
	DomID int    `json:"domid,omitempty"`
}

// UnmarshalJSON reads the host from "hypervisor_host", or from "host" as builds before
// the rename wrote it.
func (t *TargetInfo) UnmarshalJSON(b []byte) error {
	var v struct {
		plainTarget
		OldHost string `json:"host"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*t = TargetInfo(v.plainTarget)
	if t.Host == "" {
		t.Host = v.OldHost
	}
	return nil
}

// legacyTarget is TargetInfo as builds before the rename wrote and read it.
type legacyTarget struct {
	Name  string `json:"name,omitempty"`
	UUID  string `json:"uuid,omitempty"`
	Host  string `json:"host,omitempty"`
	DomID int    `json:"domid,omitempty"`
}

// Response is one line to the client. Fields after Code are set by status (and, where
// they apply, by prepare and resume).
type Response struct {
	ID    json.RawMessage `json:"id"`
	OK    bool            `json:"ok"`
	State string          `json:"state,omitempty"`
	Error string          `json:"error,omitempty"`
	Code  string          `json:"code,omitempty"`

	Target     *TargetInfo `json:"target,omitempty"`
	Source     string      `json:"source,omitempty"`
	Cursor     *Addr       `json:"cursor,omitempty"` // next pass starts here (after prepare/resume): "0x..." guest-physical
	Rules      string      `json:"rules,omitempty"`  // running rule set id
	RuleCount  int         `json:"rule_count,omitempty"`
	Passes     int         `json:"passes,omitempty"`
	LastPass   string      `json:"last_pass,omitempty"` // RFC 3339 end time of the last complete pass
	Findings   int         `json:"findings,omitempty"`
	DiskChecks int         `json:"disk_checks,omitempty"`
	Health     *Health     `json:"health,omitempty"` // status: the health model
	Epoch      uint64      `json:"epoch,omitempty"`  // highest epoch accepted on prepare/resume

	// Operator commands (operator.go).
	Detail    *StatusDetail         `json:"detail,omitempty"`     // status: what domainm status shows
	AlertTest []SinkTest            `json:"alert_test,omitempty"` // alert-test: each sink's result
	Accept    *BaselineAcceptResult `json:"accept,omitempty"`     // baseline-accept

	// IntegerAddrs encodes Cursor as an integer, for a peer whose request did not ask
	// for "0x..." (Request.AddrForm): an older build, which cannot decode the string.
	IntegerAddrs bool `json:"-"`
	// LegacyHost encodes Target's host as "host", for a peer whose request did not ask
	// for "hypervisor_host" (Request.HostForm): an older build, which reads only "host".
	LegacyHost bool `json:"-"`
}

// MarshalJSON encodes the response, its cursor as an integer if IntegerAddrs and its
// target's host as "host" if LegacyHost.
func (r Response) MarshalJSON() ([]byte, error) {
	type plain Response
	intCursor := r.IntegerAddrs && r.Cursor != nil
	oldTarget := r.LegacyHost && r.Target != nil
	switch {
	case intCursor && oldTarget:
		return json.Marshal(struct {
			plain
			Cursor *uint64       `json:"cursor,omitempty"`
			Target *legacyTarget `json:"target,omitempty"`
		}{plain(r), (*uint64)(r.Cursor), (*legacyTarget)(r.Target)})
	case intCursor:
		return json.Marshal(struct {
			plain
			Cursor *uint64 `json:"cursor,omitempty"`
		}{plain(r), (*uint64)(r.Cursor)})
	case oldTarget:
		return json.Marshal(struct {
			plain
			Target *legacyTarget `json:"target,omitempty"`
		}{plain(r), (*legacyTarget)(r.Target)})
	}
	return json.Marshal(plain(r))
}
