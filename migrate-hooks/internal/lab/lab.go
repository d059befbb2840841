// Package lab sets up a co-migration on this machine: a source and a destination host
// (two sets of QEMU processes, optionally in network namespaces), a target and a Domain M
// on the source, their paused destination copies, and the handshake with a supervisor.
package lab

import (
	"context"
	"fmt"

	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/internal/host"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// Spec is the pair's device model.
type Spec struct {
	Target, DomM host.Machine
}

// NewSpec returns a pair: a target of targetMiB with its RAM in a shared file, and a
// Domain M of dommMiB watching it through an nvdimm (ivshmem cannot co-migrate with
// QEMU 7.2: see package host); both RAMs pre-filled with non-zero
// data (an idle, all-zero Domain M would escape pacing: see README, P1).
func NewSpec(targetMiB, dommMiB int, accel string) Spec {
	return Spec{
		Target: host.Machine{Name: "target", MemMiB: targetMiB, Accel: accel, RAM: "shared", Fill: true},
		DomM: host.Machine{Name: "domm", MemMiB: dommMiB, Accel: accel, RAM: "private", Fill: true,
			Watch: "target", WatchMiB: targetMiB, WatchDevice: "nvdimm"},
	}
}

// Pair is a running pair at the source.
type Pair struct {
	Spec         Spec
	Src          *host.Local
	Target, DomM *host.VM
}

// StartSource starts the target, then Domain M (which maps the target's RAM file).
func StartSource(ctx context.Context, src *host.Local, s Spec) (*Pair, error) {
	t, err := src.Start(ctx, s.Target, "")
	if err != nil {
		return nil, err
	}
	m, err := src.Start(ctx, s.DomM, "")
	if err != nil {
		return nil, err
	}
	return &Pair{Spec: s, Src: src, Target: t, DomM: m}, nil
}

// Destination starts the paused destination copies on dst (the target first: P3's
// "created at the destination", and its RAM file is what Domain M's ivshmem maps) and
// returns both sides for the coordinator.
func (p *Pair) Destination(ctx context.Context, dst *host.Local) (t, m syncpoint.Side, err error) {
	uT, err := dst.IncomingURI()
	if err != nil {
		return t, m, err
	}
	dt, err := dst.Start(ctx, p.Spec.Target, uT)
	if err != nil {
		return t, m, fmt.Errorf("destination target: %w", err)
	}
	uM, err := dst.IncomingURI()
	if err != nil {
		return t, m, err
	}
	dm, err := dst.Start(ctx, p.Spec.DomM, uM)
	if err != nil {
		return t, m, fmt.Errorf("destination domain M: %w", err)
	}
	t = syncpoint.Side{Src: p.Target, Dst: dt, URI: uT, MemBytes: int64(p.Spec.Target.MemMiB) << 20}
	m = syncpoint.Side{Src: p.DomM, Dst: dm, URI: uM, MemBytes: int64(p.Spec.DomM.MemMiB) << 20}
	return t, m, nil
}

// Handshake binds the supervisor client to the target's RAM files at both ends.
func Handshake(c *control.Client, src, dst *host.Local, targetName string) *control.Handshake {
	return &control.Handshake{
		Client: c,
		Source: control.ResumeArgs{Source: "file:" + src.RAMFile(targetName), Layout: "flat",
			Target: control.Target{Name: targetName, Host: src.Name}},
		Dest: control.ResumeArgs{Source: "file:" + dst.RAMFile(targetName), Layout: "flat",
			Target: control.Target{Name: targetName, Host: dst.Name}},
	}
}
