package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
)

// MigrationResult is the part of `domainm-migrate migrate --json` the lab checks.
type MigrationResult struct {
	Total          *float64          `json:"total_ns"`
	TargetDowntime *float64          `json:"target_downtime_ns"`
	Gap            *float64          `json:"gap_ns"`
	Violations     []json.RawMessage `json:"violations"`
	RolledBack     bool              `json:"rolled_back"`
	Error          string            `json:"error"`
	ExitCode       int               `json:"-"`
}

func nsText(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f ms", *v/1e6)
}

// GapText and DowntimeText print the figures.
func (m MigrationResult) GapText() string      { return nsText(m.Gap) }
func (m MigrationResult) DowntimeText() string { return nsText(m.TargetDowntime) }

// check is the invariant: done, nothing rolled back, no violation, a gap of exactly 0.
func (m MigrationResult) check() error {
	switch {
	case m.ExitCode != 0 || m.Error != "":
		return fmt.Errorf("domainm-migrate exit %d: %s", m.ExitCode, m.Error)
	case m.RolledBack:
		return errors.New("the co-migration was rolled back")
	case len(m.Violations) > 0 || m.Gap == nil || *m.Gap != 0:
		return fmt.Errorf("invariant broken: monitoring gap %s, %d violations", m.GapText(), len(m.Violations))
	}
	return nil
}

func (l *Loop) startDestination(ctx context.Context) error {
	for i, m := range []Machine{l.target, l.domm} { // the target first: Domain M maps its RAM file
		uri, err := IncomingURI()
		if err != nil {
			return err
		}
		if l.dstVMs[i], err = l.dst.Start(ctx, m, uri); err != nil {
			return err
		}
		if i == 0 {
			if err := diskOverNFS(ctx, l.dstVMs[0], l.hostsNFS.URL("target.img")); err != nil {
				return err
			}
		}
		l.uris[i] = uri
	}
	return nil
}

// coMigrate runs the shipped coordinator as an operator would, on the four monitors.
func (l *Loop) coMigrate(ctx context.Context) error {
	for _, vm := range append(l.srcVMs[:], l.dstVMs[:]...) {
		vm.Release()
	}
	l.releaseControl()
	args := []string{"migrate", "--json",
		"--target-src", l.srcVMs[0].QMP, "--target-dst", l.dstVMs[0].QMP, "--target-uri", l.uris[0],
		"--domm-src", l.srcVMs[1].QMP, "--domm-dst", l.dstVMs[1].QMP, "--domm-uri", l.uris[1],
		"--control", ctlSock(l.src), "--control-dst", ctlSock(l.dst),
		"--src-ram", nvdimmSpec, "--dst-ram", nvdimmSpec, "--name", TargetName, "--uuid", TargetUUID,
		"--target-mib", fmt.Sprint(l.o.TargetMiB), "--domm-mib", fmt.Sprint(l.o.DomMMiB), "--mode", "paced",
		"--handshake-timeout", "90s", "--lease-dir", l.path("leases")}
	fmt.Fprintf(l.o.Out, "           %s %s\n", l.migrate, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, l.migrate, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var m MigrationResult
	if jerr := json.Unmarshal(out.Bytes(), &m); jerr != nil {
		return fmt.Errorf("domainm-migrate: %v; output %q; stderr %q", err, out.String(), errb.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		m.ExitCode = ee.ExitCode()
	}
	l.rep.Migration = m
	if err := writeFile(l.path("migration.json"), out.Bytes()); err != nil {
		return err
	}
	fmt.Fprintf(l.o.Out, "           total %s, target downtime %s, monitoring gap %s (full result: %s)\n",
		nsText(m.Total), m.DowntimeText(), m.GapText(), l.path("migration.json"))
	if err := m.check(); err != nil {
		return fmt.Errorf("%w; stderr: %s", err, errb.String())
	}
	r, err := l.status(ctx, l.dst)
	if err != nil {
		return fmt.Errorf("status of Domain M at the destination: %w", err)
	}
	l.checksAt = r.DiskChecks
	return nil
}

// plantAfter plants a new string in the target, now at the destination, and waits for
// its alert at rsyslogd: found by Domain M at the destination, through the nvdimm
// backed by the destination's RAM file.
func (l *Loop) plantAfter(ctx context.Context) error {
	l.rep.Implants[1] = implant()
	if err := l.tell(ctx, l.dst, l.dstVMs[0], "plant "+l.rep.Implants[1], "GUEST-PLANTED"); err != nil {
		return err
	}
	// The rule's finding is still open (the first string): new content in it is
	// alerted as memory-match-updated.
	if err := l.waitAlert(ctx, "memory-match-updated", "", l.rep.Implants[1]); err != nil {
		return err
	}
	r, err := l.status(ctx, l.dst)
	if err != nil {
		return fmt.Errorf("status of Domain M at the destination: %w", err)
	}
	if r.Target == nil || r.Target.Host != "dst" || r.State != proto.StateMonitoring {
		return fmt.Errorf("domain M at the destination: %s, target %+v", statusText(r), r.Target)
	}
	return nil
}

// diskAfter waits for two more disk checks by Domain M at the destination, over the
// same NFS mount (which the migration moved with it), healthy.
func (l *Loop) diskAfter(ctx context.Context) error {
	return l.waitFor(ctx, 5*time.Minute, "disk checks at the destination", func() (bool, string) {
		r, state := l.statusOn(ctx, l.dst)
		return r.DiskChecks >= l.checksAt+2 && healthyStatus(r), state
	})
}

// storageOutage stops ganesha: Domain M (at the destination) names disk-unreachable
// in its status and alerts disk-storage-unreachable; ganesha starts again on the same
// port: the image's soft mount reads again, disk-storage-back arrives and the checks
// go on, healthy.
func (l *Loop) storageOutage(ctx context.Context) error {
	if err := l.nfs.Stop(); err != nil {
		return err
	}
	if err := l.waitFor(ctx, 5*time.Minute, "disk-unreachable while ganesha is down", func() (bool, string) {
		r, state := l.statusOn(ctx, l.dst)
		return HasProblem(r, proto.ProblemDiskUnreachable) && l.received("disk-storage-unreachable", "", ""), state
	}); err != nil {
		return err
	}
	fmt.Fprintf(l.o.Out, "           ganesha stopped: status names %s, alert disk-storage-unreachable at rsyslogd\n", proto.ProblemDiskUnreachable)
	if err := l.nfs.Start(ctx); err != nil {
		return err
	}
	var checks int
	if err := l.waitFor(ctx, 5*time.Minute, "checks resuming once ganesha is back", func() (bool, string) {
		r, state := l.statusOn(ctx, l.dst)
		checks = r.DiskChecks
		return healthyStatus(r) && l.received("disk-storage-back", "", ""), state
	}); err != nil {
		return err
	}
	return l.waitFor(ctx, 5*time.Minute, "a check after the outage", func() (bool, string) {
		r, state := l.statusOn(ctx, l.dst)
		return r.DiskChecks > checks && healthyStatus(r), state
	})
}
