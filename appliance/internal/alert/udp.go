package alert

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// udpSink sends one RFC 5424 message per datagram (RFC 5426). UDP has no
// acknowledgement: an event counts as delivered once the kernel took the datagram.
// A connected socket does learn of an unreachable port (ICMP) on a later write,
// which fails that write and keeps the events spooled, but the datagram before it
// is lost. Use tcp or tls where loss matters.
type udpSink struct {
	cfg SinkConfig
	f   syslogFormat

	mu   sync.Mutex
	conn net.Conn
}

func newUDPSink(cfg SinkConfig) (*udpSink, error) {
	f := newSyslogFormat(cfg)
	f.maxLen = min(f.maxLen, 65000)
	return &udpSink{cfg: cfg, f: f}, nil
}

func (s *udpSink) send(ctx context.Context, recs []record, evs []*Event) (int, []int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		c, err := (&net.Dialer{}).DialContext(ctx, "udp", s.cfg.Address)
		if err != nil {
			return 0, nil, err
		}
		s.conn = c
	}
	for i, e := range evs {
		s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
		if _, err := s.conn.Write(s.f.frame(e, recs[i].data)); err != nil {
			s.conn.Close()
			s.conn = nil
			return i, nil, fmt.Errorf("sending to %s: %w", s.cfg.Address, err)
		}
	}
	return len(recs), nil, nil
}

func (s *udpSink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return s.conn.Close()
	}
	return nil
}
