package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
)

// Client is a plain control-channel connection (see "Two clients" in the package doc).
// Calls are serialised.
type Client struct {
	// Epoch, when not 0, is sent with prepare and resume (see "Stale requests").
	Epoch uint64

	mu   sync.Mutex
	c    net.Conn
	r    *bufio.Reader
	next int
}

// Dial connects to the socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Client{c: c, r: bufio.NewReaderSize(c, 4096)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// Do sends cmd with args (nil for none) and returns the response. A response with
// ok false is returned with a nil error; the error is for transport failures.
func (c *Client) Do(ctx context.Context, cmd string, args any) (Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	req := proto.NewRequest(json.RawMessage(fmt.Sprint(c.next)), cmd)
	if proto.Fenced(cmd) {
		req.Epoch = c.Epoch
	}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return Response{}, err
		}
		req.Args = b
	}
	line, _ := json.Marshal(req)
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Time{}
	}
	c.c.SetDeadline(dl)
	if _, err := c.c.Write(append(line, '\n')); err != nil {
		return Response{}, fmt.Errorf("control %s: %w", cmd, err)
	}
	b, err := c.r.ReadBytes('\n')
	if err != nil {
		return Response{}, fmt.Errorf("control %s: reading response: %w", cmd, err)
	}
	var resp Response
	if err := json.Unmarshal(b, &resp); err != nil {
		return Response{}, fmt.Errorf("control %s: bad response %q: %w", cmd, b, err)
	}
	if string(resp.ID) != string(req.ID) {
		return resp, fmt.Errorf("control %s: response id %s, want %s", cmd, resp.ID, req.ID)
	}
	return resp, nil
}
