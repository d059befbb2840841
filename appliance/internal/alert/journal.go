package alert

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// journalSink writes to systemd-journald's native protocol socket
// (/run/systemd/journal/socket; see systemd's "Native Journal Protocol"): one
// datagram per event of KEY=VALUE lines, values with newlines in the binary form
// KEY\n<le64 length><bytes>\n. It is done here rather than through go-systemd's
// journal package because that one has the socket path fixed, and the socket is
// what tests point elsewhere. Journald takes a datagram or the write fails, so an
// event leaves the spool after a successful send.
//
// Fields: MESSAGE, PRIORITY (syslog severity), SYSLOG_IDENTIFIER=domainm,
// SYSLOG_FACILITY, and DOMAINM_EVENT_ID, DOMAINM_FINDING_ID, DOMAINM_KIND,
// DOMAINM_ACTION, DOMAINM_SEVERITY, DOMAINM_DETECTOR, DOMAINM_STATE, DOMAINM_RULE,
// DOMAINM_RULESET, DOMAINM_TARGET, DOMAINM_TARGET_UUID, DOMAINM_ADDRESS,
// DOMAINM_PATH, DOMAINM_SHA256 where set, and DOMAINM_EVENT_JSON, the whole event.
type journalSink struct {
	cfg      SinkConfig
	facility int

	mu   sync.Mutex
	conn *net.UnixConn
}

func newJournalSink(cfg SinkConfig) (*journalSink, error) {
	return &journalSink{cfg: cfg, facility: facilities[cfg.Facility]}, nil
}

// maxJournalDatagram stays under the default unix datagram limits; events are
// bounded well below it (maxEventBytes), with room for the other fields.
const maxJournalDatagram = 200 << 10

func (s *journalSink) send(ctx context.Context, recs []record, evs []*Event) (int, []int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.cfg.Socket, Net: "unixgram"})
		if err != nil {
			return 0, nil, fmt.Errorf("journal socket: %w", err)
		}
		s.conn = c
	}
	for i, e := range evs {
		msg := journalMessage(e, recs[i].data, s.facility)
		if len(msg) > maxJournalDatagram {
			msg = journalMessage(e, nil, s.facility)
		}
		s.conn.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
		if _, err := s.conn.Write(msg); err != nil {
			s.conn.Close()
			s.conn = nil
			return i, nil, fmt.Errorf("writing to journal socket %s: %w", s.cfg.Socket, err)
		}
	}
	return len(recs), nil, nil
}

func journalMessage(e *Event, raw []byte, facility int) []byte {
	var b bytes.Buffer
	add := func(k, v string) {
		if v == "" {
			return
		}
		if !strings.ContainsRune(v, '\n') {
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(v)
			b.WriteByte('\n')
			return
		}
		b.WriteString(k)
		b.WriteByte('\n')
		b.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(v))))
		b.WriteString(v)
		b.WriteByte('\n')
	}
	add("MESSAGE", e.Message)
	add("PRIORITY", strconv.Itoa(int(e.Severity()&7)))
	add("SYSLOG_IDENTIFIER", "domainm")
	add("SYSLOG_FACILITY", strconv.Itoa(facility))
	add("DOMAINM_EVENT_ID", e.Event.ID)
	add("DOMAINM_FINDING_ID", e.DomainM.FindingID)
	add("DOMAINM_KIND", e.Event.Kind)
	add("DOMAINM_ACTION", e.Event.Action)
	add("DOMAINM_SEVERITY", e.Severity().String())
	add("DOMAINM_DETECTOR", e.DomainM.Detector)
	add("DOMAINM_STATE", e.DomainM.State)
	if e.Rule != nil {
		add("DOMAINM_RULE", e.Rule.Name)
		add("DOMAINM_RULESET", e.Rule.Ruleset)
	}
	if t := e.DomainM.Target; t != nil {
		add("DOMAINM_TARGET", t.Name)
		add("DOMAINM_TARGET_UUID", t.UUID)
	}
	if len(e.DomainM.Matches) > 0 {
		add("DOMAINM_ADDRESS", e.DomainM.Matches[0].Address)
	}
	if e.File != nil {
		add("DOMAINM_PATH", e.File.Path)
		if e.File.Hash != nil {
			add("DOMAINM_SHA256", e.File.Hash.SHA256)
		}
	}
	add("DOMAINM_EVENT_JSON", string(raw))
	return b.Bytes()
}

func (s *journalSink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		err := s.conn.Close()
		s.conn = nil
		return err
	}
	return nil
}
