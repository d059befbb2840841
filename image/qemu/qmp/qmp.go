// Package qmp is a small client for QEMU's machine protocol (QMP) over a unix socket,
// used by every package that starts or drives QEMU (see package qemu above it).
//
// Every call takes a context: a QEMU that hangs never hangs its caller. Errors returned
// by QEMU keep their class and description (*Error), so callers can tell a refused
// command from a lost socket (ErrClosed). Asynchronous events are kept in arrival order
// with QEMU's own timestamps (Event.Time), which come from the host's wall clock and so
// can be compared across QEMU processes.
//
// A Monitor is safe for concurrent use. Close unblocks every pending call.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrClosed is returned by calls on a monitor whose connection is gone.
var ErrClosed = errors.New("qmp: monitor closed")

// Error is an error reply from QEMU.
type Error struct {
	Command string // the command that failed
	Class   string // QMP error class, e.g. "GenericError", "CommandNotFound"
	Desc    string // QEMU's description
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Event is an asynchronous QMP event.
type Event struct {
	Name string          // e.g. "STOP", "RESUME", "MIGRATION"
	Data json.RawMessage // event data, may be empty
	// Seconds and Micros are QEMU's timestamp, as sent.
	Seconds int64
	Micros  int64
}

// Time is the event's QEMU timestamp.
func (e Event) Time() time.Time { return time.Unix(e.Seconds, e.Micros*1000) }

// maxEvents bounds the event log; a migration produces a few dozen events.
const maxEvents = 1 << 16

// Monitor is a connected QMP session.
type Monitor struct {
	conn    net.Conn
	Version string // QEMU version from the greeting, e.g. "7.2.22"

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan reply
	events  []Event
	dropped int           // events not kept because the log was full
	notify  chan struct{} // closed and replaced when an event arrives
	err     error         // set when the reader stops
	done    chan struct{} // closed when the reader stops
}

type reply struct {
	ret json.RawMessage
	err *Error
}

type message struct {
	QMP *struct {
		Version struct {
			QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
		} `json:"version"`
	} `json:"QMP"`
	ID        *uint64                       `json:"id"`
	Return    json.RawMessage               `json:"return"`
	Error     *struct{ Class, Desc string } `json:"error"`
	Event     string                        `json:"event"`
	Data      json.RawMessage               `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Dial connects to the QMP socket at path, reads the greeting and leaves
// capabilities-negotiation mode. ctx bounds the whole handshake.
func Dial(ctx context.Context, path string) (*Monitor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dialing %s: %w", path, err)
	}
	m := &Monitor{conn: conn, pending: map[uint64]chan reply{}, notify: make(chan struct{}), done: make(chan struct{})}
	r := bufio.NewReaderSize(conn, 64<<10)
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	line, err := r.ReadBytes('\n')
	stop()
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: reading greeting from %s: %w", path, err)
	}
	var g message
	if err := json.Unmarshal(line, &g); err != nil || g.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: %s: not a QMP greeting: %.80q", path, line)
	}
	v := g.QMP.Version.QEMU
	m.Version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	go m.read(r)
	if err := m.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Close closes the connection; pending and later calls return ErrClosed.
func (m *Monitor) Close() error {
	err := m.conn.Close()
	<-m.done
	return err
}

// Done is closed when the connection is gone (QEMU exited or Close was called).
func (m *Monitor) Done() <-chan struct{} { return m.done }

func (m *Monitor) read(r *bufio.Reader) {
	var err error
	for {
		var line []byte
		line, err = r.ReadBytes('\n')
		if err != nil {
			break
		}
		var msg message
		if json.Unmarshal(line, &msg) != nil {
			continue // QEMU only sends JSON objects; ignore anything else
		}
		m.dispatch(msg)
	}
	m.mu.Lock()
	m.err = fmt.Errorf("%w: %v", ErrClosed, err)
	for id, ch := range m.pending {
		close(ch)
		delete(m.pending, id)
	}
	m.mu.Unlock()
	close(m.done)
}

func (m *Monitor) dispatch(msg message) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case msg.Event != "":
		if len(m.events) >= maxEvents {
			m.dropped++
			return
		}
		m.events = append(m.events, Event{Name: msg.Event, Data: msg.Data,
			Seconds: msg.Timestamp.Seconds, Micros: msg.Timestamp.Microseconds})
		close(m.notify)
		m.notify = make(chan struct{})
	case msg.ID != nil:
		ch, ok := m.pending[*msg.ID]
		if !ok {
			return // the caller gave up
		}
		delete(m.pending, *msg.ID)
		rep := reply{ret: msg.Return}
		if msg.Error != nil {
			rep.err = &Error{Class: msg.Error.Class, Desc: msg.Error.Desc}
		}
		ch <- rep
	}
}

// Execute runs cmd with args (nil for none) and decodes its return value into out
// (nil to ignore it). It returns when QEMU answers, ctx ends or the connection goes.
func (m *Monitor) Execute(ctx context.Context, cmd string, args, out any) error {
	m.mu.Lock()
	if m.err != nil {
		err := m.err
		m.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	m.nextID++
	id := m.nextID
	ch := make(chan reply, 1)
	m.pending[id] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
	}()

	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        uint64 `json:"id"`
	}{cmd, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: encoding arguments: %w", cmd, err)
	}
	if err := m.write(ctx, append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			return fmt.Errorf("qmp %s: %w", cmd, ErrClosed)
		}
		if rep.err != nil {
			rep.err.Command = cmd
			return rep.err
		}
		if out != nil && len(rep.ret) > 0 {
			if err := json.Unmarshal(rep.ret, out); err != nil {
				return fmt.Errorf("qmp %s: decoding reply: %w", cmd, err)
			}
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

func (m *Monitor) write(ctx context.Context, b []byte) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	dl := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	m.conn.SetWriteDeadline(dl)
	_, err := m.conn.Write(b)
	return err
}

// Events returns a copy of the events received so far, oldest first.
func (m *Monitor) Events() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Event(nil), m.events...)
}

// WaitEvent waits for the first event at index >= from in the event log for which
// match returns true, and returns it with the index just past it.
func (m *Monitor) WaitEvent(ctx context.Context, from int, match func(Event) bool) (Event, int, error) {
	for {
		m.mu.Lock()
		for i := from; i < len(m.events); i++ {
			if match(m.events[i]) {
				ev := m.events[i]
				m.mu.Unlock()
				return ev, i + 1, nil
			}
		}
		from = len(m.events)
		notify, done, err := m.notify, m.done, m.err
		m.mu.Unlock()
		if err != nil {
			return Event{}, from, err
		}
		select {
		case <-notify:
		case <-done:
		case <-ctx.Done():
			return Event{}, from, ctx.Err()
		}
	}
}
