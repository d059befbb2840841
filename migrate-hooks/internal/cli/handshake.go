package cli

import (
	"context"
	"fmt"

	"github.com/domainm/domainm/migrate-hooks/control"
)

// supervisorArgs say how to reach the supervisor and what to tell it at resume.
type supervisorArgs struct {
	sock, sockDst                    string // control socket; at the destination, if another
	name, uuid                       string // the target
	srcRAM, dstRAM, srcHost, dstHost string
}

// dialSupervisor connects to the supervisor and checks that it monitors. It returns the
// handshake and what closes it, or the exit code (nothing started) when the supervisor
// cannot be used.
func dialSupervisor(ctx context.Context, env Env, a supervisorArgs) (*control.Handshake, func(), int) {
	c, err := control.Dial(ctx, a.sock)
	if err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v (nothing started)\n", err)
		return nil, nil, ExitRolledBack
	}
	if st, err := c.Status(ctx); err != nil || st != control.StateMonitoring {
		c.Close()
		fmt.Fprintf(env.Stderr, "domainm-migrate: supervisor is %q (%v), not monitoring: nothing started\n", st, err)
		return nil, nil, ExitRolledBack
	}
	target := control.Target{Name: a.name, UUID: a.uuid}
	hs := &control.Handshake{Client: c,
		Source: control.ResumeArgs{Source: sourceSpec(a.srcRAM), Layout: "flat", Target: withHost(target, a.srcHost)},
		Dest:   control.ResumeArgs{Source: sourceSpec(a.dstRAM), Layout: "flat", Target: withHost(target, a.dstHost)}}
	if a.sockDst != "" {
		// The host end of a virtio-serial port belongs to each QEMU: the destination's is
		// connected once Domain M runs there.
		hs.DestClient = control.NewClient(a.sockDst)
	}
	return hs, func() {
		c.Close()
		if hs.DestClient != nil {
			hs.DestClient.Close()
		}
	}, ExitOK
}
