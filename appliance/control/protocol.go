// Package control serves the supervisor's control channel: JSON lines over a unix
// socket, used by the migration coordinator for the handshake of DESIGN.md (status,
// prepare → quiesced, resume → monitoring).
//
// One request per line, one response line per request, in order:
//
//	{"id":1,"cmd":"status"}
//	{"id":2,"cmd":"prepare"}
//	{"id":3,"cmd":"resume","args":{"source":"file:/dev/shm/x","layout":"flat","target":{"name":"web-1","uuid":"...","host":"dst"}}}
//
// answered by {"id":N,"ok":true,"state":"monitoring"|"quiesced"|"starting",...} or
// {"id":N,"ok":false,"error":"...","code":"guest_changed"|"bad_request"|...}. The id is
// echoed as it was sent.
//
// Only the socket's owner may connect: the socket is created mode 0600 and every
// connection's peer credentials (SO_PEERCRED) must be root's or the server's own uid.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
)

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
	CodeInternal       = "internal"
)

// Request is one line from the client.
type Request struct {
	ID   json.RawMessage `json:"id,omitempty"`
	Cmd  string          `json:"cmd"`
	Args json.RawMessage `json:"args,omitempty"`
}

// ResumeArgs are resume's arguments: the memory source at the destination and the
// target's identity there.
type ResumeArgs struct {
	Source string     `json:"source"`
	Layout string     `json:"layout,omitempty"`
	Target TargetInfo `json:"target"`
}

// TargetInfo is the target's identity as the coordinator knows it.
type TargetInfo struct {
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
	Cursor     *uint64     `json:"cursor,omitempty"` // next pass starts here (after prepare/resume)
	Rules      string      `json:"rules,omitempty"`  // running rule set id
	RuleCount  int         `json:"rule_count,omitempty"`
	Passes     int         `json:"passes,omitempty"`
	LastPass   string      `json:"last_pass,omitempty"` // RFC 3339 end time of the last complete pass
	Findings   int         `json:"findings,omitempty"`
	DiskChecks int         `json:"disk_checks,omitempty"`
}

// Error is a failure a Handler reports with a protocol code.
type Error struct {
	Code string
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code.
func Errorf(code, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// codeOf is the protocol code for err.
func codeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
