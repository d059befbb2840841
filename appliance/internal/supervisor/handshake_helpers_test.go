package supervisor

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/domainm/domainm/appliance/control"
	coord "github.com/domainm/domainm/migrate-hooks/control"
)

// The setup of the handshake tests: after the first pass, a client on the real control
// socket, the destination's memory as a copy of the RAM file, the state log.

// handshakeContext waits for the first pass and returns the context of the test's
// handshake: 20 s, cancelled when the test ends.
func (h *harness) handshakeContext() context.Context {
	h.t.Helper()
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

// dialControl connects the appliance's client to the control socket, until the test
// ends.
func (h *harness) dialControl(ctx context.Context) *control.Client {
	h.t.Helper()
	return dialUntilEnd(h, ctx, control.Dial)
}

// dialCoordinator connects the migration coordinator's own client
// (migrate-hooks/control) to the control socket, until the test ends.
func (h *harness) dialCoordinator(ctx context.Context) *coord.Client {
	h.t.Helper()
	return dialUntilEnd(h, ctx, coord.Dial)
}

func dialUntilEnd[C io.Closer](h *harness, ctx context.Context, dial func(context.Context, string) (C, error)) C {
	h.t.Helper()
	c, err := dial(ctx, h.cfg.Control.Socket)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// ramCopy writes a copy of the target's RAM file under name, the destination's memory
// after a migration, and returns its path and the bytes.
func (h *harness) ramCopy(name string) (string, []byte) {
	h.t.Helper()
	b, err := os.ReadFile(h.ram)
	if err != nil {
		h.t.Fatal(err)
	}
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p, b
}

// stateLog reads the supervisor's state log.
func (h *harness) stateLog() []control.StateRecord {
	h.t.Helper()
	recs, err := control.ReadStateLog(filepath.Join(h.cfg.State.Dir, control.StateLogFile))
	if err != nil {
		h.t.Fatal(err)
	}
	return recs
}
