// Package control is the coordinator's client of the Domain M supervisor's control
// channel: JSON lines over a unix socket (a virtio-serial port or xenstore carry the same
// messages elsewhere).
//
// Requests are {"id":N,"cmd":"status"|"prepare"|"resume","args":{...}}; responses are
// {"id":N,"ok":true,"state":"monitoring"|"quiesced",...} or
// {"id":N,"ok":false,"error":"...","code":"guest_changed"|...}.
package control

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

// Supervisor states.
const (
	StateMonitoring = "monitoring"
	StateQuiesced   = "quiesced"
)

// ErrGuestChanged is matched by a RemoteError with code "guest_changed": at resume the
// supervisor did not find the guest it saw at prepare.
var ErrGuestChanged = errors.New("supervisor: guest changed between prepare and resume")

// RemoteError is a refusal from the supervisor.
type RemoteError struct {
	Cmd  string
	Code string
	Msg  string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("supervisor refused %s: %s (%s)", e.Cmd, e.Msg, e.Code)
}

// Is reports whether the refusal matches a sentinel of this package.
func (e *RemoteError) Is(target error) bool {
	return target == ErrGuestChanged && e.Code == "guest_changed"
}

// Target identifies the watched VM at its new place.
type Target struct {
	Name string `json:"name"`
	UUID string `json:"uuid,omitempty"`
	Host string `json:"host,omitempty"`
}

// ResumeArgs tell the supervisor where the target's memory is now.
type ResumeArgs struct {
	Source string `json:"source"` // memscan source spec, e.g. "file:/dev/shm/x"
	Layout string `json:"layout"` // "flat": file offset = guest-physical address
	Target Target `json:"target"`
}

// Response is a supervisor's answer.
type Response struct {
	ID    uint64 `json:"id"`
	OK    bool   `json:"ok"`
	State string `json:"state"`
	Error string `json:"error"`
	Code  string `json:"code"`
	// Raw is the whole response, for fields this package does not know.
	Raw json.RawMessage `json:"-"`
}

// Client is a connection to a supervisor. Calls are serialised.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
	id   uint64
}

// Dial connects to the supervisor's unix socket.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to supervisor at %s: %w", path, err)
	}
	return &Client{conn: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// maxLine bounds a response line; the supervisor's answers are small.
const maxLine = 1 << 20

// Call sends cmd with args (nil for none) and waits for its response, at most until ctx
// ends. A refusal is returned as *RemoteError together with the response.
func (c *Client) Call(ctx context.Context, cmd string, args any) (Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.id++
	id := c.id
	req := struct {
		ID   uint64 `json:"id"`
		Cmd  string `json:"cmd"`
		Args any    `json:"args,omitempty"`
	}{id, cmd, args}
	b, err := json.Marshal(req)
	if err != nil {
		return Response{}, fmt.Errorf("encoding %s: %w", cmd, err)
	}
	// ctx's end unblocks the call; ctx.Err is set before the deadline fires.
	c.conn.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return Response{}, fmt.Errorf("sending %s to supervisor: %w", cmd, ctxErr(ctx, err))
	}
	for {
		line, err := readLine(c.r)
		if err != nil {
			return Response{}, fmt.Errorf("waiting for supervisor's answer to %s: %w", cmd, ctxErr(ctx, err))
		}
		var resp Response
		if err := json.Unmarshal(line, &resp); err != nil {
			return Response{}, fmt.Errorf("supervisor's answer to %s: %w", cmd, err)
		}
		if resp.ID != id {
			continue // a late answer to a call that timed out
		}
		resp.Raw = append(json.RawMessage(nil), line...)
		if !resp.OK {
			return resp, &RemoteError{Cmd: cmd, Code: resp.Code, Msg: resp.Error}
		}
		return resp, nil
	}
}

func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, frag...)
		if len(line) > maxLine {
			return nil, fmt.Errorf("response longer than %d bytes", maxLine)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// ctxErr prefers the context's error to the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Status returns the supervisor's state.
func (c *Client) Status(ctx context.Context) (string, error) {
	r, err := c.Call(ctx, "status", nil)
	return r.State, err
}

// Prepare asks the supervisor to finish its block, record its cursor and unmap; it
// answers "quiesced".
func (c *Client) Prepare(ctx context.Context) (Response, error) {
	return c.expect(ctx, "prepare", nil, StateQuiesced)
}

// Resume asks the supervisor to remap the target at its new place and check it is the
// same guest; it answers "monitoring".
func (c *Client) Resume(ctx context.Context, a ResumeArgs) (Response, error) {
	return c.expect(ctx, "resume", a, StateMonitoring)
}

func (c *Client) expect(ctx context.Context, cmd string, args any, state string) (Response, error) {
	r, err := c.Call(ctx, cmd, args)
	if err == nil && r.State != state {
		err = fmt.Errorf("supervisor answered %s with state %q, want %q", cmd, r.State, state)
	}
	return r, err
}
