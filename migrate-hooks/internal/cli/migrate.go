package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/domainm/domainm/internal/units"
	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/internal/host"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

func init() {
	register(command{name: "migrate", summary: "co-migrate a running pair whose destination QEMUs wait with -incoming -S", run: runMigrate,
		exits: migrateExits,
		examples: []string{
			"domainm-migrate migrate --target-src /run/qemu/web-1.qmp --target-dst /run/qemu/dst-web-1.qmp --target-uri tcp:10.0.0.2:49152 " +
				"--domm-src /run/qemu/domm-1.qmp --domm-dst /run/qemu/dst-domm-1.qmp --domm-uri tcp:10.0.0.2:49153 --control /run/domainm/control.sock " +
				"--src-ram /dev/shm/web-1.ram --dst-ram /dev/shm/web-1.ram --name web-1 --target-ram 1GiB --domm-ram 512MiB --mode paced --link 1GB --json",
			"domainm-migrate migrate --libvirt qemu:///system --dest qemu+tcp://10.0.0.2:16509/system --target web-1 --domm domm-1 --control /run/domainm/domm-1-ctl.sock --timeout 10m",
		}})
}

// migrateExits are the exit codes of a co-migration (migrate, migrate --xen).
var migrateExits = []exit{
	{ExitOK, "done: the pair migrated and the target never ran unwatched"},
	{ExitRolledBack, "failed and rolled back: target and Domain M run at the source, monitored"},
	{ExitPaused, "failed with the target left paused (the error says where and why)"},
	{ExitUnwatched, "the target ran unwatched (invariant violated; the error says how long)"},
}

const migrateHelp = `
Co-migrates a target VM and its Domain M so that the target never runs unwatched: the
four QEMUs are driven over QMP (or, with --libvirt, libvirt drives them through its
migration phases), Domain M's supervisor is told over its control socket to quiesce at
the source and to resume on the target's memory at the destination, and the target is
resumed only once Domain M watches it there (--mode sync; paced shares --link between
the two streams; sequential migrates the target first and Domain M after the target's
last copy, as on Xen: no throttling, but Domain M's whole migration in the target's
downtime; nosync is the unsynchronised baseline, for measurements).

Sizes take IEC or SI units (--target-ram 1GiB, --link 1GB: bytes per second; a bare
number is bytes), durations a unit (--timeout 15m, --handshake-timeout 10s).
--target-mib and --domm-mib (MiB) are the older spelling of --target-ram and --domm-ram.

With --xen it co-migrates Xen domains instead (domainm-migrate migrate --xen --help).`

func runMigrate(ctx context.Context, env Env, args []string) int {
	if len(args) > 0 && (args[0] == "--xen" || args[0] == "-xen") {
		return runMigrateXen(ctx, env, args[1:])
	}
	fs := newFlags(env, "migrate", "migrate --target-src QMP --target-dst QMP --target-uri URI --domm-src QMP --domm-dst QMP --domm-uri URI --control SOCK --src-ram FILE --dst-ram FILE [flags]\n"+
		"       domainm-migrate migrate --libvirt SRC_URI --dest DST_URI --target NAME --domm NAME --control SOCK [flags]", migrateHelp)
	lvSrc := fs.String("libvirt", "", "libvirt `URI` of the source host (qemu:///system, qemu+unix:///system?socket=PATH, qemu+tcp://HOST:PORT/system): co-migrate libvirt-managed domains")
	lvDst := fs.String("dest", "", "with --libvirt: libvirt `URI` of the destination host")
	lvTarget := fs.String("target", "", "with --libvirt: the target's domain `NAME`")
	lvDomM := fs.String("domm", "", "with --libvirt: Domain M's domain `NAME`")
	tSrc := fs.String("target-src", "", "`QMP` socket of the target at the source")
	tDst := fs.String("target-dst", "", "`QMP` socket of the target's destination QEMU (started with -incoming URI -S)")
	tURI := fs.String("target-uri", "", "migration `URI` the target's destination listens on (tcp:HOST:PORT; with --libvirt tcp://ADDR:PORT, optional)")
	mSrc := fs.String("domm-src", "", "`QMP` socket of Domain M at the source")
	mDst := fs.String("domm-dst", "", "`QMP` socket of Domain M's destination QEMU")
	mURI := fs.String("domm-uri", "", "migration `URI` Domain M's destination listens on")
	sock := fs.String("control", "", "the supervisor's control socket `SOCK`")
	sockDst := fs.String("control-dst", "", "the supervisor's control socket `SOCK` once Domain M runs at the destination, if another one (the host end of a virtio-serial port belongs to each QEMU); connected only then")
	srcRAM := fs.String("src-ram", "", "the target's memory `SPEC` (with --libvirt default "+viewDevice+") at the source, as the supervisor opens it (a path means file:PATH; e.g. file:/dev/pmem0 inside Domain M)")
	dstRAM := fs.String("dst-ram", "", "the target's memory `SPEC` at the destination, likewise")
	name := fs.String("name", "target", "the target's `NAME`")
	uuid := fs.String("uuid", "", "the target's `UUID`")
	srcHost := fs.String("src-host", "src", "source `HOST` name")
	dstHost := fs.String("dst-host", "dst", "destination `HOST` name")
	var tRAM, mRAM units.Size
	fs.Var(&tRAM, "target-ram", "the target's RAM `SIZE` (1GiB; for pacing)")
	fs.Var(&mRAM, "domm-ram", "Domain M's RAM `SIZE` (512MiB; for pacing and the P1 hold)")
	tMiB := fs.Int("target-mib", 0, "the target's RAM in `MiB` (older spelling of --target-ram)")
	mMiB := fs.Int("domm-mib", 0, "Domain M's RAM in `MiB` (older spelling of --domm-ram)")
	mode := fs.String("mode", "sync", "`MODE`: sync, paced, sequential or nosync")
	var link units.Size
	fs.Var(&link, "link", "`SIZE` per second both streams share (paced: 1GB, 110MiB; 0: estimate)")
	handshake := units.Duration(10 * time.Second)
	fs.Var(&handshake, "handshake-timeout", "bound on each supervisor call (`DURATION`: 10s)")
	timeout := units.Duration(15 * time.Minute)
	fs.Var(&timeout, "timeout", "bound on the whole co-migration (`DURATION`: 15m)")
	asJSON := fs.Bool("json", false, "print the result and its timeline as JSON")
	verbose := fs.Bool("v", false, "log progress")
	leaseDir := fs.String("lease-dir", DefaultLeaseDir, "`DIR` where to announce the co-migration to the libvirt hook")
	dommName := fs.String("domm-name", "domm", "Domain M's `NAME` (for the lease)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	for _, p := range []struct {
		size  *units.Size
		mib   int
		names string
	}{{&tRAM, *tMiB, "--target-ram and --target-mib"}, {&mRAM, *mMiB, "--domm-ram and --domm-mib"}} {
		if *p.size != 0 && p.mib != 0 {
			fmt.Fprintf(env.Stderr, "domainm-migrate migrate: give one of %s (see domainm-migrate migrate --help)\n", p.names)
			return ExitUsage
		}
		if p.mib != 0 {
			*p.size = units.Size(int64(p.mib) << 20)
		}
	}
	if *lvSrc != "" {
		o := libvirtOpts{src: *lvSrc, dst: *lvDst, target: *lvTarget, domm: *lvDomM, sock: *sock, sockDst: *sockDst, srcRAM: *srcRAM, dstRAM: *dstRAM,
			tURI: *tURI, mURI: *mURI, uuid: *uuid, srcHost: *srcHost, dstHost: *dstHost, mode: *mode, link: int64(link),
			handshake: time.Duration(handshake), timeout: time.Duration(timeout), asJSON: *asJSON, verbose: *verbose, leaseDir: *leaseDir}
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
	if err != nil || (*sock == "" && m != syncpoint.NoSync) || mRAM <= 0 {
		fmt.Fprintf(env.Stderr, "domainm-migrate migrate: need --control (except nosync), --domm-ram > 0 and a valid --mode (%v)\n", err)
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(timeout))
	defer cancel()
	log := logger(env, *verbose)
	release, err := takeLease(*leaseDir, time.Duration(timeout), *name, *dommName)
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
	t := syncpoint.Side{Src: vms[0], Dst: vms[1], URI: *tURI, MemBytes: int64(tRAM)}
	md := syncpoint.Side{Src: vms[2], Dst: vms[3], URI: *mURI, MemBytes: int64(mRAM)}
	r, err := syncpoint.Run(ctx, t, md, sup, syncpoint.Config{Mode: m, LinkBandwidth: int64(link), Handshake: time.Duration(handshake),
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
