package control

import (
	"context"
	"errors"
	"fmt"

	"github.com/domainm/domainm/appliance/control/proto"
)

// Handshake drives one supervisor through a co-migration: it has the coordinator's
// Supervisor methods (package syncpoint), with the memory sources bound.
type Handshake struct {
	Client *Client
	// DestClient reaches the supervisor after it moved, when that is another socket (a
	// virtio-serial port's host end belongs to each QEMU); nil: Client. Only Resume uses
	// it; the rollback's ResumeAtSource goes to Client.
	DestClient *Client
	Dest       ResumeArgs // where the target is after migration
	Source     ResumeArgs // where it was (for rollback)

	resumeSent bool // Resume was sent: the supervisor may watch the destination
}

// Prepare asks the supervisor to quiesce.
func (h *Handshake) Prepare(ctx context.Context) error {
	_, err := h.Client.Prepare(ctx)
	return err
}

// Resume asks the supervisor to monitor the target at the destination.
func (h *Handshake) Resume(ctx context.Context) error {
	c := h.Client
	if h.DestClient != nil {
		c = h.DestClient
	}
	h.resumeSent = true
	_, err := c.Resume(ctx, h.Dest)
	return err
}

// ResumeAtSource asks the supervisor to monitor the target at the source again. A
// supervisor that answers "monitoring already" (wrong_state) either never quiesced (its
// prepare timed out or expired before it was carried out) or carried out a resume
// whose answer the coordinator never got. Without a resume sent it still watches the
// source: done. Otherwise it may watch the destination: it is prepared again and
// resumed at the source; the page fingerprints taken now, of the destination's copy
// that never ran, must match the source's paused copy, or the resume is refused.
func (h *Handshake) ResumeAtSource(ctx context.Context) error {
	r, err := h.Client.Resume(ctx, h.Source)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != proto.CodeWrongState {
		return err
	}
	if !h.resumeSent {
		st := r.State
		if st == "" { // an older supervisor leaves the state out of a refusal
			st, _ = h.Client.Status(ctx)
		}
		if st == StateMonitoring {
			return nil
		}
	}
	if _, perr := h.Client.Prepare(ctx); perr != nil {
		return fmt.Errorf("%w; preparing again to move it to the source: %w", err, perr)
	}
	_, err = h.Client.Resume(ctx, h.Source)
	return err
}

// Monitoring reports whether the supervisor's state is "monitoring".
func (h *Handshake) Monitoring(ctx context.Context) (bool, error) {
	st, err := h.Client.Status(ctx)
	return st == StateMonitoring, err
}
