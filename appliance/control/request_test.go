package control

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// waitingHandler holds prepare and resume until release, then reports what Live and
// Epoch say about the request at that moment.
type waitingHandler struct {
	fakeHandler
	arrived chan struct{}
	release chan struct{}
	live    chan error
	epoch   chan uint64
}

func newWaitingHandler() *waitingHandler {
	return &waitingHandler{arrived: make(chan struct{}, 1), release: make(chan struct{}),
		live: make(chan error, 1), epoch: make(chan uint64, 1)}
}

func (h *waitingHandler) Resume(ctx context.Context, a ResumeArgs) (Response, error) {
	h.arrived <- struct{}{}
	<-h.release
	err := Live(ctx)
	h.live <- err
	h.epoch <- Epoch(ctx)
	if err != nil {
		return Response{State: StateQuiesced}, err
	}
	return Response{State: StateMonitoring}, nil
}

// A request's deadline (timeout_ms from its receive time) and its requester closing
// the connection both make Live refuse it as expired; its epoch reaches the handler
// (issue 8, item 8).
func TestLiveExpiredAndAbandoned(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		closeConn  bool
		wantLive   bool
		epoch      uint64
	}{
		{"waited for", `{"id":1,"cmd":"resume","epoch":4,"timeout_ms":5000,"args":{"source":"file:/x"}}`, false, true, 4},
		{"deadline passed", `{"id":1,"cmd":"resume","epoch":5,"timeout_ms":50,"args":{"source":"file:/x"}}`, false, false, 5},
		{"requester gone", `{"id":1,"cmd":"resume","args":{"source":"file:/x"}}`, true, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newWaitingHandler()
			s := listen(t, h)
			c, err := net.Dial("unix", s.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.line+"\n")
			<-h.arrived
			if tc.closeConn {
				c.Close()
			}
			time.Sleep(100 * time.Millisecond) // past the 50 ms deadline
			close(h.release)
			err = <-h.live
			if (err == nil) != tc.wantLive {
				t.Fatalf("Live = %v, want live %v", err, tc.wantLive)
			}
			var e *Error
			if err != nil && (!errors.As(err, &e) || e.Code != CodeExpired) {
				t.Errorf("Live = %#v, want code %s", err, CodeExpired)
			}
			if got := <-h.epoch; got != tc.epoch {
				t.Errorf("Epoch = %d, want %d", got, tc.epoch)
			}
		})
	}
}

func TestNegativeTimeoutRefused(t *testing.T) {
	s := listen(t, &fakeHandler{})
	got := rawExchange(t, s.Path(), `{"id":1,"cmd":"prepare","timeout_ms":-1}`)
	if want := `{"id":1,"ok":false,"error":"timeout_ms -1 is negative","code":"bad_request"}`; got[0] != want {
		t.Errorf("got %s, want %s", got[0], want)
	}
}

// peerClosed runs beside the connection's reader (a command the coordinator abandoned
// can be committed after the server went back to reading): it must not wait for the
// reader. It used to take the read lock and hang the supervisor's memory loop.
func TestPeerClosedBesideReader(t *testing.T) {
	path := t.TempDir() + "/p.sock"
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	go io.Copy(io.Discard, server) // the reader, blocked in Read
	time.Sleep(50 * time.Millisecond)
	gone := peerClosed(server)
	ask := func() bool {
		t.Helper()
		r := make(chan bool, 1)
		go func() { r <- gone() }()
		select {
		case v := <-r:
			return v
		case <-time.After(5 * time.Second):
			t.Fatal("peerClosed blocked beside the connection's reader")
			return false
		}
	}
	if ask() {
		t.Error("peer reported gone while connected")
	}
	client.Close()
	time.Sleep(50 * time.Millisecond)
	// The reader has consumed the end of file by now; a peek still finds it.
	if !ask() {
		t.Error("peer not reported gone after it closed")
	}
}

// Once the server has answered, a request is over: Live fails without asking the
// connection.
func TestLiveAfterAnswer(t *testing.T) {
	h := &keepCtx{ctxs: make(chan context.Context, 1)}
	s := listen(t, h)
	rawExchange(t, s.Path(), `{"id":1,"cmd":"prepare","timeout_ms":60000}`)
	ctx := <-h.ctxs
	var e *Error
	if err := Live(ctx); !errors.As(err, &e) || e.Code != CodeExpired {
		t.Errorf("Live after the answer = %v, want %s", err, CodeExpired)
	}
}

// keepCtx answers prepare at once and hands its context out.
type keepCtx struct {
	fakeHandler
	ctxs chan context.Context
}

func (h *keepCtx) Prepare(ctx context.Context) (Response, error) {
	h.ctxs <- ctx
	return Response{State: StateQuiesced}, nil
}
