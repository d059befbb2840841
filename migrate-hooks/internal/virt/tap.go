package virt

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// tapConn passes libvirtd's packets through to go-libvirt unchanged and hands each QEMU
// monitor event to onEvent on the way: go-libvirt's decoder fails on events without
// data and drops them, and those (STOP, RESUME) are what the invariant is built from.
type tapConn struct {
	net.Conn
	pending []byte
	onEvent func(MonitorEvent)
	onError func(error)
}

func (c *tapConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// next reads one whole packet into pending.
func (c *tapConn) next() error {
	var l [4]byte
	if _, err := io.ReadFull(c.Conn, l[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(l[:])
	if size < 4+rpcHeaderLen || size > maxPacket {
		return fmt.Errorf("libvirt packet of %d bytes", size)
	}
	pkt := make([]byte, size)
	copy(pkt, l[:])
	if _, err := io.ReadFull(c.Conn, pkt[4:]); err != nil {
		return err
	}
	c.pending = pkt
	h := pkt[4:]
	prog, proc, typ := binary.BigEndian.Uint32(h), binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:])
	if prog == qemuProgram && proc == qemuProcMonitorEvent && typ == rpcTypeMessage {
		ev, err := decodeMonitorEvent(h[rpcHeaderLen:])
		if err != nil {
			c.onError(fmt.Errorf("QEMU monitor event from libvirtd: %w", err))
		} else {
			c.onEvent(ev)
		}
	}
	return nil
}

// tapDialer dials libvirtd's socket and taps the connection.
type tapDialer struct {
	network, addr string
	onEvent       func(MonitorEvent)
	onError       func(error)
}

func (d *tapDialer) Dial() (net.Conn, error) {
	c, err := net.Dial(d.network, d.addr)
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, onEvent: d.onEvent, onError: d.onError}, nil
}
