package control

import "context"

// Handshake drives one supervisor through a co-migration: it has the coordinator's
// Supervisor methods (package syncpoint), with the memory sources bound.
type Handshake struct {
	Client *Client
	Dest   ResumeArgs // where the target is after migration
	Source ResumeArgs // where it was (for rollback)
}

// Prepare asks the supervisor to quiesce.
func (h *Handshake) Prepare(ctx context.Context) error {
	_, err := h.Client.Prepare(ctx)
	return err
}

// Resume asks the supervisor to monitor the target at the destination.
func (h *Handshake) Resume(ctx context.Context) error {
	_, err := h.Client.Resume(ctx, h.Dest)
	return err
}

// ResumeAtSource asks the supervisor to monitor the target at the source again.
func (h *Handshake) ResumeAtSource(ctx context.Context) error {
	_, err := h.Client.Resume(ctx, h.Source)
	return err
}

// Monitoring reports whether the supervisor's state is "monitoring".
func (h *Handshake) Monitoring(ctx context.Context) (bool, error) {
	st, err := h.Client.Status(ctx)
	return st == StateMonitoring, err
}
