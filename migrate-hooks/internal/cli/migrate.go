package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/internal/host"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

func init() {
	register(command{"migrate", "co-migrate a running pair whose destination QEMUs wait with -incoming -S", runMigrate})
}

func runMigrate(ctx context.Context, env Env, args []string) int {
	if len(args) > 0 && (args[0] == "--xen" || args[0] == "-xen") {
		return runMigrateXen(ctx, env, args[1:])
	}
	fs := newFlags(env, "migrate", "migrate --target-src QMP --target-dst QMP --target-uri URI --domm-src QMP --domm-dst QMP --domm-uri URI --control SOCK --src-ram FILE --dst-ram FILE [flags]\n"+
		"       domainm-migrate migrate --libvirt SRC_URI --dest DST_URI --target NAME --domm NAME --control SOCK [flags]")
	lvSrc := fs.String("libvirt", "", "libvirt URI of the source host (qemu:///system, qemu+unix:///system?socket=PATH, qemu+tcp://HOST:PORT/system): co-migrate libvirt-managed domains")
	lvDst := fs.String("dest", "", "with --libvirt: libvirt URI of the destination host")
	lvTarget := fs.String("target", "", "with --libvirt: the target's domain name")
	lvDomM := fs.String("domm", "", "with --libvirt: Domain M's domain name")
	tSrc := fs.String("target-src", "", "QMP socket of the target at the source")
	tDst := fs.String("target-dst", "", "QMP socket of the target's destination QEMU (started with -incoming URI -S)")
	tURI := fs.String("target-uri", "", "migration URI the target's destination listens on (tcp:HOST:PORT; with --libvirt tcp://ADDR:PORT, optional)")
	mSrc := fs.String("domm-src", "", "QMP socket of Domain M at the source")
	mDst := fs.String("domm-dst", "", "QMP socket of Domain M's destination QEMU")
	mURI := fs.String("domm-uri", "", "migration URI Domain M's destination listens on")
	sock := fs.String("control", "", "the supervisor's control socket")
	sockDst := fs.String("control-dst", "", "the supervisor's control socket once Domain M runs at the destination, if another one (the host end of a virtio-serial port belongs to each QEMU); connected only then")
	srcRAM := fs.String("src-ram", "", "the target's memory (with --libvirt default "+viewDevice+") at the source, as the supervisor opens it (a path means file:PATH; e.g. file:/dev/pmem0 inside Domain M)")
	dstRAM := fs.String("dst-ram", "", "the target's memory at the destination, likewise")
	name := fs.String("name", "target", "the target's name")
	uuid := fs.String("uuid", "", "the target's UUID")
	srcHost := fs.String("src-host", "src", "source host name")
	dstHost := fs.String("dst-host", "dst", "destination host name")
	tMiB := fs.Int("target-mib", 0, "the target's RAM in MiB (for pacing)")
	mMiB := fs.Int("domm-mib", 0, "Domain M's RAM in MiB (for pacing and the P1 hold)")
	mode := fs.String("mode", "sync", "sync, paced or nosync")
	link := fs.Int64("link", 0, "bytes/s both streams share (paced; 0: estimate)")
	handshake := fs.Duration("handshake-timeout", 10*time.Second, "bound on each supervisor call")
	timeout := fs.Duration("timeout", 15*time.Minute, "bound on the whole co-migration")
	asJSON := fs.Bool("json", false, "print the result and its timeline as JSON")
	verbose := fs.Bool("v", false, "log progress")
	leaseDir := fs.String("lease-dir", DefaultLeaseDir, "where to announce the co-migration to the libvirt hook")
	dommName := fs.String("domm-name", "domm", "Domain M's name (for the lease)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *lvSrc != "" {
		o := libvirtOpts{src: *lvSrc, dst: *lvDst, target: *lvTarget, domm: *lvDomM, sock: *sock, sockDst: *sockDst, srcRAM: *srcRAM, dstRAM: *dstRAM,
			tURI: *tURI, mURI: *mURI, uuid: *uuid, srcHost: *srcHost, dstHost: *dstHost, mode: *mode, link: *link,
			handshake: *handshake, timeout: *timeout, asJSON: *asJSON, verbose: *verbose, leaseDir: *leaseDir}
		return runLibvirt(ctx, env, o)
	}
	for flagName, v := range map[string]string{"target-src": *tSrc, "target-dst": *tDst, "target-uri": *tURI,
		"domm-src": *mSrc, "domm-dst": *mDst, "domm-uri": *mURI, "src-ram": *srcRAM, "dst-ram": *dstRAM} {
		if v == "" {
			fmt.Fprintf(env.Stderr, "domainm-migrate migrate: --%s is required\n", flagName)
			return ExitUsage
		}
	}
	m, err := ParseMode(*mode)
	if err != nil || (*sock == "" && m != syncpoint.NoSync) || *mMiB <= 0 {
		fmt.Fprintf(env.Stderr, "domainm-migrate migrate: need --control (except nosync), --domm-mib > 0 and a valid --mode (%v)\n", err)
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	log := logger(env, *verbose)
	release, err := takeLease(*leaseDir, *timeout, *name, *dommName)
	if err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v (nothing started)\n", err)
		return ExitRolledBack
	}
	defer release()

	var vms [4]*host.VM
	for i, a := range []struct{ path, host, name string }{
		{*tSrc, *srcHost, *name}, {*tDst, *dstHost, *name}, {*mSrc, *srcHost, *dommName}, {*mDst, *dstHost, *dommName}} {
		vms[i], err = host.Attach(ctx, a.path, a.host, a.name)
		if err != nil {
			fmt.Fprintf(env.Stderr, "domainm-migrate: %v\n", err)
			return ExitPaused
		}
		defer vms[i].Kill()
	}
	var sup syncpoint.Supervisor
	if m != syncpoint.NoSync {
		hs, closeSup, code := dialSupervisor(ctx, env, supervisorArgs{sock: *sock, sockDst: *sockDst, name: *name, uuid: *uuid,
			srcRAM: *srcRAM, dstRAM: *dstRAM, srcHost: *srcHost, dstHost: *dstHost})
		if hs == nil {
			return code
		}
		defer closeSup()
		sup = hs
	}
	t := syncpoint.Side{Src: vms[0], Dst: vms[1], URI: *tURI, MemBytes: int64(*tMiB) << 20}
	md := syncpoint.Side{Src: vms[2], Dst: vms[3], URI: *mURI, MemBytes: int64(*mMiB) << 20}
	r, err := syncpoint.Run(ctx, t, md, sup, syncpoint.Config{Mode: m, LinkBandwidth: *link, Handshake: *handshake,
		Log: log, Alert: alert(env, log)})
	report(env.Stdout, r, err, *asJSON)
	if err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v\n", err)
	}
	return exitCode(r, err)
}

func withHost(t control.Target, h string) control.Target {
	t.Host = h
	return t
}

// sourceSpec turns a path into a memscan source spec; specs pass through.
func sourceSpec(s string) string {
	if strings.HasPrefix(s, "/") {
		return "file:" + s
	}
	return s
}
