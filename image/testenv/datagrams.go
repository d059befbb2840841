package testenv

import (
	"net"
	"sync"
	"testing"
)

// Datagrams collects what a datagram socket receives while the test reads it: a UDP
// syslog receiver, the socket that stands in for systemd's NOTIFY_SOCKET.
type Datagrams struct {
	conn net.PacketConn
	mu   sync.Mutex
	got  []string
}

// ListenDatagrams listens on network ("udp", "unixgram") at address and collects every
// datagram until the test ends.
func ListenDatagrams(t testing.TB, network, address string) *Datagrams {
	t.Helper()
	c, err := net.ListenPacket(network, address)
	if err != nil {
		t.Fatal(err)
	}
	d := &Datagrams{conn: c}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			d.mu.Lock()
			d.got = append(d.got, string(buf[:n]))
			d.mu.Unlock()
		}
	}()
	return d
}

// Addr is the address the socket listens on.
func (d *Datagrams) Addr() net.Addr { return d.conn.LocalAddr() }

// All returns the datagrams received so far, in order.
func (d *Datagrams) All() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.got...)
}
