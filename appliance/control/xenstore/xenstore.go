// Package xenstore is a small client of Xen's xenstore wire protocol (xsd_sockmsg
// frames): read, write, mkdir, rm, set permissions and watches. The same frames travel
// over /dev/xen/xenbus in a domU (Domain M) and over xenstored's unix socket in dom0,
// so one client serves both ends of the handshake that runs over xenstore.
//
// Replies are matched to requests in order (one request in flight at a time); watch
// events arrive on the channel Watch returns. Payloads are bounded by the protocol's
// 4096 bytes; a reply that breaks the framing ends the connection.
package xenstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
)

// Paths of the two transports.
const (
	DevicePath = "/dev/xen/xenbus"       // in a domU (and dom0)
	SocketPath = "/run/xenstored/socket" // xenstored's socket in dom0
	maxPayload = 4096                    // XENSTORE_PAYLOAD_MAX
	headerSize = 16                      // struct xsd_sockmsg
)

// Message types (xen/include/public/io/xs_wire.h).
const (
	opDirectory  = 1
	opRead       = 2
	opWatch      = 4
	opUnwatch    = 5
	opWrite      = 11
	opMkdir      = 12
	opRm         = 13
	opSetPerms   = 14
	opWatchEvent = 15
	opError      = 16
)

// ErrNotFound is xenstore's ENOENT.
var ErrNotFound = errors.New("xenstore: no such node")

// Error is an error reply other than ENOENT, e.g. EACCES.
type Error struct {
	Op, Path, Code string
}

func (e *Error) Error() string { return fmt.Sprintf("xenstore %s %s: %s", e.Op, e.Path, e.Code) }

// Event is a fired watch: the node that changed (or the watched path at registration)
// and the watch's token.
type Event struct {
	Path, Token string
}

type reply struct {
	op      uint32
	payload []byte
	err     error
}

// Client is a connection to xenstore.
type Client struct {
	rw        io.ReadWriteCloser
	mu        sync.Mutex // one request at a time
	replies   chan reply
	events    chan Event
	reqID     uint32
	dead      chan struct{} // closed when the reader stopped
	closeOnce sync.Once
}

// Open connects through the domU device, or xenstored's socket where the device is
// missing (dom0 without the xenbus device).
func Open() (*Client, error) {
	f, err := os.OpenFile(DevicePath, os.O_RDWR, 0)
	if err == nil {
		return New(f), nil
	}
	c, serr := net.Dial("unix", SocketPath)
	if serr != nil {
		return nil, fmt.Errorf("xenstore: %v; %v", err, serr)
	}
	return New(c), nil
}

// New runs the protocol over rw.
func New(rw io.ReadWriteCloser) *Client {
	c := &Client{rw: rw, replies: make(chan reply, 1), events: make(chan Event, 64), dead: make(chan struct{})}
	go c.readLoop()
	return c
}

// Close ends the connection; Events is closed.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() { err = c.rw.Close() })
	return err
}

// Events returns the fired watches of all Watch calls. Events that find the channel
// full (64 unread) are dropped, so read nodes again rather than count events.
func (c *Client) Events() <-chan Event { return c.events }

func (c *Client) readLoop() {
	defer close(c.dead)
	defer close(c.events)
	defer close(c.replies)
	hdr := make([]byte, headerSize)
	for {
		if _, err := io.ReadFull(c.rw, hdr); err != nil {
			c.replies <- reply{err: fmt.Errorf("xenstore: reading a reply header: %w", err)}
			return
		}
		op := binary.LittleEndian.Uint32(hdr[0:])
		n := binary.LittleEndian.Uint32(hdr[12:])
		if n > maxPayload {
			c.replies <- reply{err: fmt.Errorf("xenstore: reply of %d bytes (limit %d)", n, maxPayload)}
			return
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(c.rw, p); err != nil {
			c.replies <- reply{err: fmt.Errorf("xenstore: reading a %d-byte reply: %w", n, err)}
			return
		}
		if op == opWatchEvent {
			parts := bytes.SplitN(p, []byte{0}, 3)
			if len(parts) >= 2 {
				// Never block replies behind unread events: a watcher that falls 64
				// events behind loses the newest (it re-reads the nodes anyway).
				select {
				case c.events <- Event{Path: string(parts[0]), Token: string(parts[1])}:
				default:
				}
			}
			continue
		}
		c.replies <- reply{op: op, payload: p}
	}
}

// call sends one request and waits for its reply.
func (c *Client) call(op uint32, name, path string, payload []byte) ([]byte, error) {
	if len(payload) > maxPayload {
		return nil, fmt.Errorf("xenstore %s %s: %d bytes (limit %d)", name, path, len(payload), maxPayload)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.dead:
		return nil, fmt.Errorf("xenstore %s %s: connection closed", name, path)
	default:
	}
	c.reqID++
	msg := make([]byte, headerSize+len(payload))
	binary.LittleEndian.PutUint32(msg[0:], op)
	binary.LittleEndian.PutUint32(msg[4:], c.reqID)
	binary.LittleEndian.PutUint32(msg[12:], uint32(len(payload)))
	copy(msg[headerSize:], payload)
	if _, err := c.rw.Write(msg); err != nil {
		return nil, fmt.Errorf("xenstore %s %s: %w", name, path, err)
	}
	r, ok := <-c.replies
	if !ok {
		return nil, fmt.Errorf("xenstore %s %s: connection closed", name, path)
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.op == opError {
		code := strings.TrimRight(string(r.payload), "\x00")
		if code == "ENOENT" {
			return nil, fmt.Errorf("xenstore %s %s: %w", name, path, ErrNotFound)
		}
		return nil, &Error{Op: name, Path: path, Code: code}
	}
	if r.op != op {
		return nil, fmt.Errorf("xenstore %s %s: reply of type %d", name, path, r.op)
	}
	return r.payload, nil
}

func z(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(append(b, s...), 0)
	}
	return b
}

// Read returns a node's value.
func (c *Client) Read(path string) (string, error) {
	p, err := c.call(opRead, "read", path, z(path))
	return string(p), err
}

// Write sets a node's value, creating it (and its parents).
func (c *Client) Write(path, value string) error {
	_, err := c.call(opWrite, "write", path, append(z(path), value...))
	return err
}

// Mkdir creates a node with an empty value.
func (c *Client) Mkdir(path string) error {
	_, err := c.call(opMkdir, "mkdir", path, z(path))
	return err
}

// Rm removes a node and its children.
func (c *Client) Rm(path string) error {
	_, err := c.call(opRm, "rm", path, z(path))
	return err
}

// List returns a node's children.
func (c *Client) List(path string) ([]string, error) {
	p, err := c.call(opDirectory, "directory", path, z(path))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range strings.Split(string(p), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// SetPerms sets a node's permissions, e.g. "n0" (owner dom0, no access for others)
// then "r7" (domain 7 may read), as xenstore-chmod takes them.
func (c *Client) SetPerms(path string, perms ...string) error {
	_, err := c.call(opSetPerms, "set_perms", path, z(append([]string{path}, perms...)...))
	return err
}

// Watch registers a watch on path (and its children); events carry token. Xenstore
// fires it once at registration.
func (c *Client) Watch(path, token string) error {
	_, err := c.call(opWatch, "watch", path, z(path, token))
	return err
}

// Unwatch removes a watch.
func (c *Client) Unwatch(path, token string) error {
	_, err := c.call(opUnwatch, "unwatch", path, z(path, token))
	return err
}
