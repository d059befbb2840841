package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
	"github.com/domainm/domainm/migrate-hooks/internal/virt"
)

// viewDevice is Domain M's view of the target under libvirt (image/libvirt/domm.xml: a
// read-only virtio disk with serial domainm-view), the same path at both ends.
const viewDevice = "disk:/dev/disk/by-id/virtio-domainm-view" // O_DIRECT: a buffered read of the view goes stale (memscan/direct.go)

type libvirtOpts struct {
	src, dst, target, domm, sock, sockDst, srcRAM, dstRAM, tURI, mURI, uuid, srcHost, dstHost, mode, leaseDir string
	link                                                                                                      int64
	handshake, timeout                                                                                        time.Duration
	asJSON, verbose                                                                                           bool
}

// runLibvirt co-migrates a libvirt-managed pair through the virt driver: the same
// coordinator, failure handling and exit codes as over QMP.
func runLibvirt(ctx context.Context, env Env, o libvirtOpts) int {
	m, err := ParseMode(o.mode)
	if err == nil && m == syncpoint.Sequential {
		// libvirt resumes a migrated domain unless told otherwise; not tried here
		err = fmt.Errorf("mode sequential is for QMP and Xen, not libvirt")
	}
	if err != nil || o.dst == "" || o.target == "" || o.domm == "" || (o.sock == "" && m != syncpoint.NoSync) {
		fmt.Fprintf(env.Stderr, "domainm-migrate migrate --libvirt: need --dest, --target, --domm, --control (except nosync) and a valid --mode (%v)\n", err)
		return ExitUsage
	}
	for _, p := range []*string{&o.srcRAM, &o.dstRAM} {
		if *p == "" {
			*p = viewDevice
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	log := logger(env, o.verbose)
	release, err := takeLease(o.leaseDir, o.timeout, o.target, o.domm)
	if err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v (nothing started)\n", err)
		return ExitRolledBack
	}
	defer release()
	var hosts [2]*virt.Host
	for i, h := range [][2]string{{o.srcHost, o.src}, {o.dstHost, o.dst}} {
		if hosts[i], err = virt.Dial(h[0], h[1], log); err != nil {
			fmt.Fprintf(env.Stderr, "domainm-migrate: %v (nothing started)\n", err)
			return ExitRolledBack
		}
		defer hosts[i].Close()
	}
	tm := &virt.Migration{Name: o.target, Src: hosts[0], Dst: hosts[1]}
	mm := &virt.Migration{Name: o.domm, Src: hosts[0], Dst: hosts[1], DestXML: virt.ViewPath(tm)}
	var sizes [2]int64
	for i, name := range []string{o.target, o.domm} {
		if sizes[i], err = hosts[0].MemBytes(name); err != nil {
			fmt.Fprintf(env.Stderr, "domainm-migrate: %v (nothing started)\n", err)
			return ExitRolledBack
		}
	}
	var sup syncpoint.Supervisor
	if m != syncpoint.NoSync {
		hs, closeSup, code := dialSupervisor(ctx, env, supervisorArgs{sock: o.sock, sockDst: o.sockDst, name: o.target, uuid: o.uuid,
			srcRAM: o.srcRAM, dstRAM: o.dstRAM, srcHost: o.srcHost, dstHost: o.dstHost})
		if hs == nil {
			return code
		}
		defer closeSup()
		sup = hs
	}
	t := syncpoint.Side{Src: tm.Source(), Dst: tm.Destination(), URI: o.tURI, MemBytes: sizes[0]}
	md := syncpoint.Side{Src: mm.Source(), Dst: mm.Destination(), URI: o.mURI, MemBytes: sizes[1]}
	r, err := syncpoint.Run(ctx, t, md, sup, syncpoint.Config{Mode: m, LinkBandwidth: o.link, Handshake: o.handshake,
		Poll: virt.Poll, Log: log, Alert: alert(env, log)})
	report(env.Stdout, r, err, o.asJSON)
	if err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v\n", err)
	}
	return exitCode(r, err)
}
