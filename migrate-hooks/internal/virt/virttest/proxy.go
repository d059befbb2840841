package virttest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Proxy forwards migration streams to a destination and can cut them (a broken link).
type Proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// NewProxy forwards to the tcp://HOST:PORT to; it returns the proxy and its own URI.
func NewProxy(t testing.TB, to string) (*Proxy, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.Cut() })
	addr := strings.TrimPrefix(strings.TrimPrefix(to, "tcp://"), "tcp:")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, d)
			p.mu.Unlock()
			go func() { io.Copy(d, c); d.Close() }()
			go func() { io.Copy(c, d); c.Close() }()
		}
	}()
	return p, "tcp://" + ln.Addr().String()
}

// Cut closes every stream (both directions).
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
