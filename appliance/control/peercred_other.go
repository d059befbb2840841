//go:build !linux

package control

import (
	"errors"
	"net"
)

// peerCred is only implemented on Linux; elsewhere every connection is refused.
func peerCred(c *net.UnixConn) (uint32, int32, error) {
	return ^uint32(0), 0, errors.New("peer credentials not supported on this OS")
}

// peerClosed cannot tell elsewhere.
func peerClosed(*net.UnixConn) func() bool { return nil }
