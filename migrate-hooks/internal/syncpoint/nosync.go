package syncpoint

import (
	"context"
	"fmt"
)

// nosync runs the published baseline: two independent migrations started together,
// each destination resumed as soon as it has arrived.
func (r *run) nosync(ctx context.Context) error {
	if err := r.setup(ctx, r.cfg.MaxBandwidth, r.cfg.MaxBandwidth, false); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}
	if err := r.prepareBoth(ctx); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}
	if err := r.t.Src.Migrate(ctx, r.t.URI); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}
	if err := r.m.Src.Migrate(ctx, r.m.URI); err != nil {
		return &Error{Phase: "setup", Err: err, Outcome: r.abort(ctx)}
	}
	errs := make(chan error, 2)
	for _, s := range []Side{r.t, r.m} {
		go func() {
			ctx, cancel := context.WithTimeout(ctx, r.cfg.P1+r.cfg.P2)
			defer cancel()
			ev, _, err := s.Dst.WaitEvent(ctx, r.from[s.Dst], isMigrationStatus("completed", "failed", "cancelled"))
			if err == nil && ev.Status != "completed" {
				err = fmt.Errorf("%s: migration %s", s.Dst.Where(), ev.Status)
			}
			if err == nil {
				err = s.Dst.Cont(ctx)
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			return &Error{Phase: "nosync", Err: err, Outcome: "check both hosts"}
		}
	}
	return nil
}
