package control

import (
	"context"
	"errors"
	"time"
)

// request is what a Handler may learn about the request it carries out.
type request struct {
	cmd      string
	epoch    uint64
	received time.Time // monotonic
	timeout  time.Duration
	gone     func() bool // the requester closed its connection; nil: cannot tell
}

type requestKey struct{}

// withRequest returns ctx carrying rq, with rq's deadline (counted from its receive
// time) when it has a timeout.
func withRequest(ctx context.Context, rq *request) (context.Context, context.CancelFunc) {
	ctx = context.WithValue(ctx, requestKey{}, rq)
	if rq.timeout > 0 {
		return context.WithDeadline(ctx, rq.received.Add(rq.timeout))
	}
	return context.WithCancel(ctx)
}

// Epoch returns the epoch the request in ctx was sent with (0: none).
func Epoch(ctx context.Context) uint64 {
	if rq, ok := ctx.Value(requestKey{}).(*request); ok {
		return rq.epoch
	}
	return 0
}

// Live returns nil while the requester of the request in ctx still waits for the
// answer, else an *Error with CodeExpired that says why: its deadline passed, or it
// closed its connection. A Handler checks it before it changes anything, and again
// just before it commits, and refuses when it fails (see "Stale requests").
//
// Once the server has answered the request (or given up on it), ctx is done and Live
// fails: a Handler that goes on with it afterwards must not commit.
func Live(ctx context.Context) error {
	rq, _ := ctx.Value(requestKey{}).(*request)
	switch err := ctx.Err(); {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded) && rq != nil:
		return Errorf(CodeExpired, "%s expired: received %v ago with a timeout of %v",
			rq.cmd, time.Since(rq.received).Round(time.Millisecond), rq.timeout)
	default:
		return Errorf(CodeExpired, "request abandoned: %v", err)
	}
	if rq != nil && rq.gone != nil && rq.gone() {
		return Errorf(CodeExpired, "%s abandoned: the coordinator closed the connection it came on (%v after it was received)",
			rq.cmd, time.Since(rq.received).Round(time.Millisecond))
	}
	return nil
}
