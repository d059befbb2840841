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
