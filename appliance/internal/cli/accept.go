package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/appliance/internal/supervisor"
	"github.com/domainm/domainm/detectors/integrity"
)

func init() {
	register(command{name: "baseline accept", summary: "take changes of the running daemon's target into its baseline (audited)", run: runBaselineAccept,
		exits: []exit{
			{ExitClean, "every path accepted"},
			{ExitFindings, "some path did not differ from the baseline (nothing to accept)"},
			{ExitError, "the supervisor could not be asked, or the baseline not written"},
		},
		examples: []string{
			"domainm baseline accept /etc/ssh/sshd_config /usr/local/bin/backup.sh",
			"domainm baseline accept --socket /run/domainm/control.sock --json /etc/crontab",
		}})
}

var (
	_ supervisor.BaselineAccepter = (*daemonDisk)(nil)
	_ supervisor.BaselineAccepter = storageProbe{}
)

// Accept passes an accept on to the disk checker it wraps.
func (p storageProbe) Accept(ctx context.Context, paths []string) ([]string, []string, error) {
	a, ok := p.DiskChecker.(supervisor.BaselineAccepter)
	if !ok {
		return nil, nil, fmt.Errorf("this disk checker cannot change its baseline")
	}
	if err := probeImage(p.image); err != nil {
		return nil, nil, fmt.Errorf("disk image %s: %w", p.image, err)
	}
	return a.Accept(ctx, paths)
}

// Accept takes the current state of paths (as a check sees it now) into the baseline:
// a changed entry's new record replaces the old, an added one is added, a removed one
// is dropped; every other record stays as it was. The new baseline is written
// atomically (temp file, fsync, rename), as domainm check --update writes it.
func (d *daemonDisk) Accept(ctx context.Context, paths []string) (accepted, unchanged []string, err error) {
	want := map[string]bool{}
	for _, p := range paths {
		want[path.Clean(p)] = true
	}
	base, err := integrity.OpenBaseline(d.db)
	if err != nil {
		return nil, nil, err
	}
	fsys, closer, _, err := integrity.OpenImage(d.image, d.format, d.partition)
	if err != nil {
		return nil, nil, err
	}
	defer closer.Close()
	cur := map[string]*integrity.Record{}
	changes, st, err := integrity.Check(ctx, fsys, base, integrity.CheckOptions{Workers: 1, Log: d.log,
		Record: func(r *integrity.Record) error {
			if want[r.Path] {
				cur[r.Path] = r
			}
			return nil
		}})
	if err != nil {
		return nil, nil, err
	}
	changed := map[string]bool{}
	for _, c := range changes {
		if want[c.Path] {
			changed[c.Path] = true
		}
	}
	for _, p := range paths {
		if p = path.Clean(p); changed[p] {
			accepted = append(accepted, p)
		} else {
			unchanged = append(unchanged, p)
		}
	}
	if len(accepted) == 0 {
		return nil, unchanged, nil
	}
	w, err := integrity.CreateDB(d.db, base.Header)
	if err != nil {
		return nil, nil, err
	}
	defer w.Abort()
	seen := map[string]bool{}
	for _, r := range base.Records {
		seen[r.Path] = true
		if changed[r.Path] {
			if c := cur[r.Path]; c != nil {
				r = c
			} else {
				continue // removed, and accepted so
			}
		}
		if err := w.Add(r); err != nil {
			return nil, nil, err
		}
	}
	for p := range changed {
		if c := cur[p]; c != nil && !seen[p] {
			if err := w.Add(c); err != nil {
				return nil, nil, err
			}
		}
	}
	if err := w.Commit(st); err != nil {
		return nil, nil, err
	}
	d.log.Info("baseline changed: changes accepted", "db", d.db, "paths", len(accepted))
	return accepted, unchanged, nil
}

// runBaselineAccept asks the running supervisor to take changes into its baseline.
func runBaselineAccept(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "baseline accept", "baseline accept [--config FILE | --socket PATH] [--json] PATH...",
		`Asks the running supervisor (domainm run) to take the current state of each PATH (a
path in the target's filesystem, as file-integrity alerts name it) into its baseline,
as an operator does after reviewing a change: a changed file's new attributes and hash
replace the old, an added file is added, a removed one dropped; the rest of the
baseline stays. The baseline is rewritten atomically. An audit alert
(baseline-accepted: who, what, when) goes to every sink, a disk check runs at once,
and each accepted finding ends (file-change-ended, reason accepted).`)
	cfgPath := fs.String("config", config.DefaultPath, "configuration `FILE` naming the control socket")
	sock := fs.String("socket", "", "control socket `PATH` (instead of reading --config)")
	asJSON := fs.Bool("json", false, "print the answer as JSON (accepted, unchanged)")
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			return ExitClean, parse(env, fs, []string{"--help"})
		}
	}
	var paths []string
	rest := args
	for len(rest) > 0 { // paths may come before, between or after the options
		if err := parseFlags(fs, rest); err != nil {
			return ExitUsage, err
		}
		if fs.NArg() == 0 {
			break
		}
		paths = append(paths, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(paths) == 0 {
		return ExitUsage, &usageError{"no PATH given"}
	}
	for _, p := range paths {
		if !path.IsAbs(p) {
			return ExitError, fmt.Errorf("%q: want an absolute path in the target's filesystem", p)
		}
	}
	sockPath, err := controlSocket(*cfgPath, *sock)
	if err != nil {
		return ExitError, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c, err := control.Dial(ctx, sockPath)
	if err != nil {
		return ExitError, err
	}
	defer c.Close()
	r, err := c.Do(ctx, proto.CmdBaselineAccept, proto.BaselineAcceptArgs{Paths: paths, By: requester()})
	if err != nil {
		return ExitError, err
	}
	if !r.OK || r.Accept == nil {
		return ExitError, fmt.Errorf("supervisor: %s (%s)", r.Error, r.Code)
	}
	if *asJSON {
		if err := json.NewEncoder(env.Stdout).Encode(r.Accept); err != nil {
			return ExitError, err
		}
	} else {
		for _, p := range r.Accept.Accepted {
			fmt.Fprintf(env.Stdout, "accepted   %s\n", p)
		}
		for _, p := range r.Accept.Unchanged {
			fmt.Fprintf(env.Stdout, "unchanged  %s (does not differ from the baseline: nothing to accept)\n", p)
		}
	}
	if len(r.Accept.Unchanged) > 0 {
		return ExitFindings, nil
	}
	return ExitClean, nil
}
