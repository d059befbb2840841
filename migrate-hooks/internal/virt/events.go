package virt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// libvirt's RPC framing: a 4-byte length (counting itself), then the header below, then
// the XDR payload. QEMU monitor events come from the QEMU program as messages.
const (
	qemuProgram          = 0x20008087
	qemuProcMonitorEvent = 6
	rpcTypeMessage       = 2  // VIR_NET_MESSAGE_MESSAGE (0: call, 1: reply)
	rpcHeaderLen         = 24 // program, version, procedure, type, serial, status
	maxPacket            = 32 << 20
	maxEventString       = 1 << 20
	uuidLen              = 16
)

// MonitorEvent is one QEMU monitor event relayed by libvirtd
// (qemu_domain_monitor_event_msg): QEMU's own name and timestamp, and its data (JSON),
// empty for events that carry none (STOP, RESUME).
type MonitorEvent struct {
	Domain  string
	Event   string
	Time    time.Time
	Details string
}

// Status is a MIGRATION event's status, "" for other events.
func (e MonitorEvent) Status() string {
	if e.Event != "MIGRATION" || e.Details == "" {
		return ""
	}
	var d struct {
		Status string `json:"status"`
	}
	if json.Unmarshal([]byte(e.Details), &d) != nil {
		return ""
	}
	return d.Status
}

var errShort = errors.New("truncated")

// xdrReader reads XDR from a bounded buffer; every read checks what is left.
type xdrReader struct {
	b   []byte
	off int
}

func (r *xdrReader) uint32() (uint32, error) {
	if len(r.b)-r.off < 4 {
		return 0, fmt.Errorf("uint32 at offset %d: %w", r.off, errShort)
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v, nil
}

func (r *xdrReader) uint64() (uint64, error) {
	hi, err := r.uint32()
	if err != nil {
		return 0, err
	}
	lo, err := r.uint32()
	return uint64(hi)<<32 | uint64(lo), err
}

// opaque reads n bytes padded to a multiple of 4.
func (r *xdrReader) opaque(n int) ([]byte, error) {
	padded := (n + 3) &^ 3
	if n < 0 || padded < n || len(r.b)-r.off < padded {
		return nil, fmt.Errorf("%d bytes at offset %d: %w", n, r.off, errShort)
	}
	v := r.b[r.off : r.off+n]
	r.off += padded
	return v, nil
}

func (r *xdrReader) string() (string, error) {
	n, err := r.uint32()
	if err != nil {
		return "", err
	}
	if n > maxEventString {
		return "", fmt.Errorf("string of %d bytes at offset %d: too long", n, r.off)
	}
	b, err := r.opaque(int(n))
	return string(b), err
}

// decodeMonitorEvent decodes the payload of a QEMU_PROC_DOMAIN_MONITOR_EVENT message:
//
//	int callbackID; remote_nonnull_domain dom {string name; opaque uuid[16]; int id};
//	string event; hyper seconds; unsigned int micros; remote_string details (optional)
//
// go-libvirt's own decoder drops an event whose details are absent; this one does not.
func decodeMonitorEvent(payload []byte) (MonitorEvent, error) {
	r := &xdrReader{b: payload}
	var e MonitorEvent
	if _, err := r.uint32(); err != nil { // callback id
		return e, fmt.Errorf("callback id: %w", err)
	}
	name, err := r.string()
	if err != nil {
		return e, fmt.Errorf("domain name: %w", err)
	}
	if _, err := r.opaque(uuidLen); err != nil {
		return e, fmt.Errorf("domain uuid: %w", err)
	}
	if _, err := r.uint32(); err != nil {
		return e, fmt.Errorf("domain id: %w", err)
	}
	ev, err := r.string()
	if err != nil {
		return e, fmt.Errorf("event name: %w", err)
	}
	sec, err := r.uint64()
	if err != nil {
		return e, fmt.Errorf("seconds: %w", err)
	}
	usec, err := r.uint32()
	if err != nil {
		return e, fmt.Errorf("microseconds: %w", err)
	}
	if sec > 1<<40 || usec >= 1e6 {
		return e, fmt.Errorf("timestamp %d.%06d out of range", sec, usec)
	}
	present, err := r.uint32()
	if err != nil {
		return e, fmt.Errorf("details flag: %w", err)
	}
	var details string
	if present != 0 {
		if details, err = r.string(); err != nil {
			return e, fmt.Errorf("details: %w", err)
		}
	}
	return MonitorEvent{Domain: name, Event: ev, Time: time.Unix(int64(sec), int64(usec)*1000), Details: details}, nil
}
