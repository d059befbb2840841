package xenstore

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeStore speaks the server side of the wire protocol over conn: a map of nodes,
// watches fired on writes (and once at registration), like xenstored.
func fakeStore(t *testing.T, conn net.Conn) {
	nodes := map[string]string{}
	watches := map[string]string{} // path -> token
	send := func(op, id uint32, p []byte) {
		h := make([]byte, headerSize)
		binary.LittleEndian.PutUint32(h[0:], op)
		binary.LittleEndian.PutUint32(h[4:], id)
		binary.LittleEndian.PutUint32(h[12:], uint32(len(p)))
		conn.Write(append(h, p...))
	}
	hdr := make([]byte, headerSize)
	for {
		if _, err := io.ReadFull(conn, hdr); err != nil {
			return
		}
		op, id := binary.LittleEndian.Uint32(hdr[0:]), binary.LittleEndian.Uint32(hdr[4:])
		p := make([]byte, binary.LittleEndian.Uint32(hdr[12:]))
		io.ReadFull(conn, p)
		parts := strings.Split(string(p), "\x00")
		switch op {
		case opRead:
			v, ok := nodes[parts[0]]
			if !ok {
				send(opError, id, []byte("ENOENT\x00"))
				continue
			}
			send(op, id, []byte(v))
		case opWrite:
			path, v, _ := strings.Cut(string(p), "\x00")
			nodes[path] = v
			send(op, id, []byte("OK\x00"))
			for w, tok := range watches {
				if strings.HasPrefix(path, w) {
					send(opWatchEvent, 0, []byte(path+"\x00"+tok+"\x00"))
				}
			}
		case opWatch:
			watches[parts[0]] = parts[1]
			send(op, id, []byte("OK\x00"))
			send(opWatchEvent, 0, []byte(parts[0]+"\x00"+parts[1]+"\x00"))
		case opSetPerms:
			send(opError, id, []byte("EACCES\x00"))
		default:
			send(opError, id, []byte("ENOSYS\x00"))
		}
	}
}

func TestClient(t *testing.T) {
	a, b := net.Pipe()
	go fakeStore(t, b)
	c := New(a)
	defer c.Close()
	if _, err := c.Read("domainm/state"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read of a missing node = %v, want ErrNotFound", err)
	}
	if err := c.Watch("domainm", "tok"); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, c); ev.Path != "domainm" || ev.Token != "tok" {
		t.Fatalf("registration event = %+v", ev)
	}
	if err := c.Write("domainm/request", `{"id":1,"cmd":"prepare"}`); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, c); ev.Path != "domainm/request" {
		t.Fatalf("event after write = %+v", ev)
	}
	v, err := c.Read("domainm/request")
	if err != nil || v != `{"id":1,"cmd":"prepare"}` {
		t.Fatalf("read = %q, %v", v, err)
	}
	var xe *Error
	if err := c.SetPerms("domainm", "n3"); !errors.As(err, &xe) || xe.Code != "EACCES" {
		t.Fatalf("set_perms = %v, want an EACCES *Error", err)
	}
	if err := c.Write("x", strings.Repeat("a", maxPayload)); err == nil {
		t.Fatal("a payload over 4096 bytes was sent")
	}
}

// TestOversizedReply: a reply longer than the protocol allows ends the connection
// with an error instead of an allocation the peer chose.
func TestOversizedReply(t *testing.T) {
	a, b := net.Pipe()
	go func() {
		hdr := make([]byte, headerSize)
		io.ReadFull(b, hdr)
		io.ReadFull(b, make([]byte, binary.LittleEndian.Uint32(hdr[12:])))
		binary.LittleEndian.PutUint32(hdr[0:], opRead)
		binary.LittleEndian.PutUint32(hdr[12:], 1<<30)
		b.Write(hdr)
		b.Close()
	}()
	c := New(a)
	defer c.Close()
	if _, err := c.Read("x"); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("read with an oversized reply = %v", err)
	}
	if _, err := c.Read("y"); err == nil {
		t.Fatal("the connection still answers after a broken frame")
	}
}

func next(t *testing.T, c *Client) Event {
	t.Helper()
	select {
	case ev := <-c.Events():
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event")
	}
	return Event{}
}
