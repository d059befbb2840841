package control

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCred returns the uid and pid of the process at the other end of c.
func peerCred(c *net.UnixConn) (uid uint32, pid int32, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("getsockopt SO_PEERCRED: %w", serr)
	}
	return cred.Uid, cred.Pid, nil
}

// peerClosed returns a function that reports whether the peer of c has closed the
// connection: a peek that does not wait finds end-of-file. (Data the peer sent before it
// closed is found first: a peer that pipelined requests and left counts as present
// until they are read.) It never blocks: it runs beside the connection's reader, so it
// goes through Control (no read lock) and MSG_DONTWAIT.
func peerClosed(c *net.UnixConn) func() bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	return func() bool {
		closed := false
		raw.Control(func(fd uintptr) {
			var b [1]byte
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			closed = n == 0 && err == nil
		})
		return closed
	}
}
