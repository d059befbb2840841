// Package control is the coordinator's client of the Domain M supervisor's control
// channel: JSON lines over a unix socket (a virtio-serial port or xenstore carry the same
// messages elsewhere).
//
// The messages are defined once, in the supervisor's leaf package appliance/control/proto
// (standard library only, the one appliance package domainm-migrate may link); this
// package adds what a coordinator needs on top: a Client that fences prepare and resume
// with an epoch and timeout_ms (see Client), errors to branch on (ErrGuestChanged,
// ErrStale), and the Handshake the sync points drive. The supervisor's own plain client
// (appliance/control.Client) sends what it is told and is for status and tests; this one
// is for migrations. Requests are {"id":N,"cmd":"status"|"prepare"|"resume","args":{...}};
// responses {"id":N,"ok":true,"state":"monitoring"|"quiesced",...} or
// {"id":N,"ok":false,"error":"...","code":"guest_changed"|"expired"|"stale"|...}.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
)

// Supervisor states (proto's).
const (
	StateMonitoring = proto.StateMonitoring
	StateQuiesced   = proto.StateQuiesced
)

// ErrGuestChanged is matched by a RemoteError with code "guest_changed": at resume the
// supervisor did not find the guest it saw at prepare.
var ErrGuestChanged = errors.New("supervisor: guest changed between prepare and resume")

// ErrStale is matched by a RemoteError with code "expired" or "stale": the supervisor
// did nothing, because the request's deadline had passed, its connection was closed or
// a later request (a higher epoch) had been accepted.
var ErrStale = errors.New("supervisor: request refused as stale")

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
	switch target {
	case ErrGuestChanged:
		return e.Code == proto.CodeGuestChanged
	case ErrStale:
		return e.Code == proto.CodeExpired || e.Code == proto.CodeStale
	}
	return false
}

// Target identifies the watched VM at its new place.
type Target = proto.TargetInfo

// ResumeArgs tell the supervisor where the target's memory is now.
type ResumeArgs = proto.ResumeArgs

// Response is a supervisor's answer.
type Response struct {
	proto.Response
	// Raw is the whole response as received.
	Raw json.RawMessage `json:"-"`
}

// Client is a connection to a supervisor. Calls are serialised.
//
// A call that fails on the way (its context ended, the socket broke, the answer was
// garbled) closes the connection: the supervisor then sees the request abandoned, and
// no late answer can be taken for the answer to a later request. The next call
// connects again, learns the supervisor's epoch from status and sends its prepare and
// resume with a higher one, so the supervisor refuses anything still pending from the
// abandoned connection once it has taken a later request (package doc of the
// supervisor's control protocol, "Stale requests").
type Client struct {
	path string

	mu    sync.Mutex
	conn  net.Conn // nil: connect before the next call
	r     *bufio.Reader
	id    uint64
	epoch uint64 // sent with prepare and resume on this connection
}

// Dial connects to the supervisor's unix socket and learns its epoch.
func Dial(ctx context.Context, path string) (*Client, error) {
	c := newClient(path)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// Epoch is the epoch the client sends with prepare and resume now.
func (c *Client) Epoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// connect opens a connection and sets the epoch above both the supervisor's and the
// one used before.
func (c *Client) connect(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return fmt.Errorf("connecting to supervisor at %s: %w", c.path, err)
	}
	c.conn, c.r = conn, bufio.NewReaderSize(conn, 64<<10)
	resp, err := c.exchange(ctx, proto.CmdStatus, nil)
	if err != nil {
		conn.Close()
		c.conn = nil
		return err
	}
	c.epoch = max(c.epoch, resp.Epoch) + 1
	return nil
}

// maxLateAnswers bounds the late answers skipped before a call's own (see exchange).
const maxLateAnswers = 8

// newClient starts the request ids at a random base below 2^52 (exact in any JSON
// reader), so that answers to another client's requests are told apart.
func newClient(path string) *Client {
	return &Client{path: path, id: 1<<32 + rand.Uint64N(1<<51)}
}

// maxLine bounds a response line; the supervisor's answers are small.
const maxLine = 1 << 20

// handshakeMargin is kept off the timeout sent to the supervisor (at most a tenth of
// it), so that its deadline falls before the moment the coordinator gives up even
// after the request's time in transit.
const handshakeMargin = 100 * time.Millisecond

// Call sends cmd with args (nil for none) and waits for its response, at most until ctx
// ends. A refusal is returned as *RemoteError together with the response.
func (c *Client) Call(ctx context.Context, cmd string, args any) (Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		if err := c.connect(ctx); err != nil {
			return Response{}, err
		}
	}
	resp, err := c.exchange(ctx, cmd, args)
	if err != nil && resp.ID == nil {
		c.conn.Close() // abandoned: see Client
		c.conn = nil
	}
	return resp, err
}

// exchange sends one request on the open connection and reads its answer.
func (c *Client) exchange(ctx context.Context, cmd string, args any) (Response, error) {
	c.id++
	id := strconv.FormatUint(c.id, 10)
	req := proto.NewRequest(json.RawMessage(id), cmd) // an older supervisor ignores the forms asked for and answers in its own, which decode too
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return Response{}, fmt.Errorf("encoding %s: %w", cmd, err)
		}
		req.Args = b
	}
	if proto.Fenced(cmd) {
		req.Epoch = c.epoch
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl)
			left -= min(left/10, handshakeMargin)
			if left < time.Millisecond {
				return Response{}, fmt.Errorf("sending %s to supervisor: %w", cmd, context.DeadlineExceeded)
			}
			req.TimeoutMs = left.Milliseconds()
		}
	}
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
	line, err := readLine(c.r)
	if err != nil {
		return Response{}, fmt.Errorf("waiting for supervisor's answer to %s: %w", cmd, ctxErr(ctx, err))
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("supervisor's answer to %s: %w", cmd, err)
	}
	// A late answer is skipped. Over a unix socket none can come (the connection of a
	// failed call is dropped), but a virtio-serial port's guest end outlives the host
	// end's connections: an answer to a request abandoned earlier (a frozen supervisor
	// woken up) arrives on the next connection, and would otherwise fail this and every
	// later call by one. Ids start at a random base per client, so an answer meant for
	// another request, of this client or an earlier one, is never taken for this one.
	for skipped := 0; string(resp.ID) != id; skipped++ {
		if skipped == maxLateAnswers {
			return Response{}, fmt.Errorf("supervisor answered %s with id %s, want %s (after %d late answers)", cmd, resp.ID, id, skipped)
		}
		if line, err = readLine(c.r); err != nil {
			return Response{}, fmt.Errorf("waiting for supervisor's answer to %s: %w", cmd, ctxErr(ctx, err))
		}
		resp = Response{}
		if err := json.Unmarshal(line, &resp); err != nil {
			return Response{}, fmt.Errorf("supervisor's answer to %s: %w", cmd, err)
		}
	}
	resp.Raw = append(json.RawMessage(nil), line...)
	if !resp.OK {
		return resp, &RemoteError{Cmd: cmd, Code: resp.Code, Msg: resp.Error}
	}
	return resp, nil
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
	r, err := c.Call(ctx, proto.CmdStatus, nil)
	return r.State, err
}

// Prepare asks the supervisor to finish its block, record its cursor and unmap; it
// answers "quiesced".
func (c *Client) Prepare(ctx context.Context) (Response, error) {
	return c.expect(ctx, proto.CmdPrepare, nil, StateQuiesced)
}

// Resume asks the supervisor to remap the target at its new place and check it is the
// same guest; it answers "monitoring".
func (c *Client) Resume(ctx context.Context, a ResumeArgs) (Response, error) {
	return c.expect(ctx, proto.CmdResume, a, StateMonitoring)
}

func (c *Client) expect(ctx context.Context, cmd string, args any, state string) (Response, error) {
	r, err := c.Call(ctx, cmd, args)
	if err == nil && r.State != state {
		err = fmt.Errorf("supervisor answered %s with state %q, want %q", cmd, r.State, state)
	}
	return r, err
}
