package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/domainm/domainm/image/ganesha"
	"github.com/domainm/domainm/migrate-hooks/control"
)

// Options configure a run of the full loop.
type Options struct {
	Dir    string    // work folder: images, sockets, logs (kept for inspection)
	BinDir string    // where domainm and domainm-migrate are built (the build cache: bin/lab)
	Out    io.Writer // the timeline; nil: discarded
	// TargetMiB and DomMMiB are the VMs' RAM (defaults 128 and 512).
	TargetMiB, DomMMiB int
}

// Target identity, as it must reach the receiver.
const (
	TargetName = "lab-target"
	TargetUUID = "0b9a1c3e-5d7f-4e21-8a6b-c4d2e0f1a3b5"
	// SetuidPath is the binary planted on the target's disk.
	SetuidPath = "/usr/bin/.lab-helper"
	// nvdimmSpec: Domain M finds the target's RAM by the nvdimm's NFIT handle (slot 0
	// + 1), the same at both hosts.
	nvdimmSpec = "nvdimm:handle=0x1"
)

// Report is what a run measured.
type Report struct {
	Steps     []Step
	Implants  [2]string // before and after the migration
	Migration MigrationResult
	// BootToReady is Domain M's image from QEMU's start to READY (source host).
	BootToReady time.Duration
	Total       time.Duration
}

// Step is one line of the timeline.
type Step struct {
	Name       string
	Start, End time.Duration // since the run started
}

// Loop is one run's state: what it started, in the order of the steps.
type Loop struct {
	o       Options
	start   time.Time
	rep     *Report
	image   string // the appliance image (make image): bin/image
	migrate string
	kernel  string
	initrds [1]string // the target's
	pki     PKI
	syslog  *Rsyslog
	nfs     *ganesha.Server // Domain M's: NFSv4 on the host's loopback (QEMU user networking)
	export  string
	// The hosts' side of the same exported folder: NFSv3 in a network namespace with
	// its own rpcbind, where the targets' QEMUs run and open the disk as nfs://.
	ns       *ganesha.Namespace
	hostsNFS *ganesha.Server
	src, dst *Host
	target   Machine
	domm     Machine
	srcVMs   [2]*VM // target, Domain M
	dstVMs   [2]*VM
	uris     [2]string // the destinations' incoming URIs
	checksAt int       // Domain M's disk checks when the migration ended
	ctl      *control.Client
	ctlHost  *Host // whose Domain M ctl is connected to
}

// Run runs the full loop: it starts everything, proves each point and stops what it
// started (every process by its process group, RAM files removed), even on error.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.TargetMiB == 0 {
		o.TargetMiB = 128
	}
	if o.DomMMiB == 0 {
		o.DomMMiB = 512
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	// Absolute: rsyslogd changes its working directory (make lab passes bin/lab/run).
	for _, p := range []*string{&o.Dir, &o.BinDir} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		*p = abs
	}
	l := &Loop{o: o, start: time.Now(), rep: &Report{}}
	defer l.close()
	for _, s := range l.steps() {
		if err := l.run(ctx, s.name, s.fn); err != nil {
			return l.rep, err
		}
	}
	l.rep.Total = time.Since(l.start)
	fmt.Fprintf(o.Out, "[%6.1fs] full loop passed: monitoring gap %s, target downtime %s\n",
		l.rep.Total.Seconds(), l.rep.Migration.GapText(), l.rep.Migration.DowntimeText())
	return l.rep, nil
}

type step struct {
	name string
	fn   func(context.Context) error
}

func (l *Loop) steps() []step {
	return []step{
		{"make image (Domain M), domainm-migrate, the target's initramfs", l.build},
		{"lab CA; rsyslogd on TLS", l.startSyslog},
		{"target disk image in the exported folder; nfs-ganesha (NFSv4 for Domain M; NFSv3 + rpcbind in a namespace for the hosts)", l.startNFS},
		{"host src: target and Domain M's image boot (TCG)", l.startSource},
		{"Domain M READY under systemd, export mounted; monitoring, baseline over NFS", l.waitMonitoring},
		{"in the target: string in a process's memory, new setuid binary on its disk", l.plantBefore},
		{"both alerts at rsyslogd with target name and uuid", l.waitFirstAlerts},
		{"host dst: paused destination QEMUs", l.startDestination},
		{"co-migrate with domainm-migrate (invariant checked)", l.coMigrate},
		{"new string planted after migration, found from the destination", l.plantAfter},
		{"disk check over the same export at the destination", l.diskAfter},
		{"ganesha stopped and started: disk-unreachable, then checks resume", l.storageOutage},
	}
}

func (l *Loop) run(ctx context.Context, name string, fn func(context.Context) error) error {
	s := Step{Name: name, Start: time.Since(l.start)}
	fmt.Fprintf(l.o.Out, "[%6.1fs] %s ...\n", s.Start.Seconds(), name)
	err := fn(ctx)
	s.End = time.Since(l.start)
	l.rep.Steps = append(l.rep.Steps, s)
	if err != nil {
		fmt.Fprintf(l.o.Out, "[%6.1fs] FAILED: %s: %v\n", s.End.Seconds(), name, err)
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(l.o.Out, "[%6.1fs] done (%.1fs)\n", s.End.Seconds(), (s.End - s.Start).Seconds())
	return nil
}

// close stops everything this run started, the VMs first.
func (l *Loop) close() {
	l.releaseControl()
	for _, h := range []*Host{l.dst, l.src} {
		if h != nil {
			h.Close()
		}
	}
	var errs []error
	if l.nfs != nil {
		errs = append(errs, l.nfs.Close())
	}
	if l.hostsNFS != nil {
		errs = append(errs, l.hostsNFS.Close())
	}
	if l.ns != nil {
		errs = append(errs, l.ns.Close())
	}
	if l.syslog != nil {
		errs = append(errs, l.syslog.Stop())
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(l.o.Out, "cleanup: %v\n", err)
	}
}

func (l *Loop) path(name string) string { return filepath.Join(l.o.Dir, name) }

func implant() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "DOMAINM-DEMO-IMPLANT-" + hex.EncodeToString(b) // the shipped rule domainm_demo_marker
}

func mkdirs(paths ...string) error {
	for _, p := range paths {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	return nil
}
