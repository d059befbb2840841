// Package control serves the supervisor's control channel, used by the migration
// coordinator for the handshake of DESIGN.md (status, prepare → quiesced, resume →
// monitoring): a Server on a unix socket, ServeDevice on a virtio-serial port, and a
// plain Client.
//
// The messages, their wire format and the rules against stale requests (timeout_ms,
// epoch, codes "expired" and "stale") are defined in package proto, which the
// coordinator imports too; this package re-exports them under their own names
// (aliases, see names.go) so the supervisor reads control.Response. What the server
// adds: Live and Epoch let a Handler apply those rules (it checks when it takes the
// request up and again just before it commits the change), and Error carries a
// protocol code out of a Handler.
//
// Only the socket's owner may connect: the socket is created mode 0600 and every
// connection's peer credentials (SO_PEERCRED) must be root's or the server's own uid.
//
// # Two clients
//
// Client here and the coordinator's (migrate-hooks/control) speak the same messages
// but differ on purpose. This one sends exactly what it is given (any command, the
// epoch in Client.Epoch or none, no timeout_ms), returns a refusal as a response, not
// an error, and keeps its connection after a failure: `domainm status` and the
// protocol's tests use it, and the tests must be able to send stale and malformed
// requests. The coordinator's learns the supervisor's epoch and sends a higher one on
// each connection, derives timeout_ms from its context, drops the connection after a
// failed call and connects again, and maps refusals to errors it branches on.
package control

import (
	"errors"
	"fmt"
)

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
