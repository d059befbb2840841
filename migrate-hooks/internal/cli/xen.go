package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/domainm/domainm/internal/units"
	"github.com/domainm/domainm/migrate-hooks/internal/xenmig"
)

func init() {
	modes["migrate --xen"] = command{name: "migrate --xen", summary: "co-migrate a Xen target and its Domain M (xl, in the source's dom0)", run: runMigrateXen,
		exits: []exit{
			{ExitOK, "done: the pair migrated and the target never ran unwatched"},
			{ExitRolledBack, "failed and rolled back: the target runs at the source, monitored by Domain M"},
			{ExitPaused, "failed (the error says at which step; the target may be left paused)"},
			{ExitUnwatched, "the target ran unwatched (invariant violated; the timeline says how long)"},
		},
		examples: []string{
			"domainm-migrate migrate --xen --dest dom0-b --target web-1 --domm-name domainm-1 --timeout 30m --json",
		}}
}

// runMigrateXen is `domainm-migrate migrate --xen`: the Xen co-migration, run in the
// source's dom0 (package xenmig: xl, ssh to the destination's dom0, domainm-xen there
// and here).
func runMigrateXen(ctx context.Context, env Env, args []string) int {
	fs := newFlags(env, "migrate --xen", "migrate --xen --dest HOST [--target NAME] [--domm-name NAME] [flags]", `
Co-migrates a Xen target and its Domain M from this dom0 to --dest's, one after the
other (xl migrate over ssh as root; the dom0 tool grants Domain M the target's memory at
each host): the target migrates first (arriving paused) while Domain M watches it;
Domain M is told to quiesce the moment the target stops for its last copy (the dom0
tool's wait-suspend); Domain M follows and is pointed at the target's new domain, and
only then is the target unpaused. If the target's migration fails, the pair stays at
the source, monitored (exit 1; 3 if the target ran unwatched meanwhile). The timeline
(--json) has every step and the monitoring gap. Durations take a unit (--timeout 30m).`)
	dest := fs.String("dest", "", "destination `HOST`: xl migrate's target, reached as root over ssh")
	target := fs.String("target", "target", "the target's xl domain `NAME`")
	domm := fs.String("domm-name", "domainm", "Domain M's xl domain `NAME`")
	tool := fs.String("tool", "domainm-xen", "the dom0 `TOOL` (grant, request) at both hosts")
	save := fs.Bool("domm-save", false, "move Domain M by xl save, scp and xl restore instead of xl migrate (a PV Domain M: before Xen 4.19 only a PV domU may foreign-map, and without shadow paging it cannot live-migrate)")
	timeout := units.Duration(30 * time.Minute)
	fs.Var(&timeout, "timeout", "bound on the whole co-migration (`DURATION`: 30m)")
	asJSON := fs.Bool("json", false, "print the result and its timeline as JSON")
	verbose := fs.Bool("v", false, "log progress")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *dest == "" {
		fmt.Fprintln(env.Stderr, "domainm-migrate migrate --xen: --dest is required")
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(timeout))
	defer cancel()
	r, err := xenmig.Migrate(ctx, xenmig.SSH{}, xenmig.Config{Target: *target, DomM: *domm, Dest: *dest, Tool: *tool, DomMSave: *save, Log: logger(env, *verbose)})
	if *asJSON {
		out := struct {
			*xenmig.Result
			Error string `json:"error,omitempty"`
		}{Result: r}
		if err != nil {
			out.Error = err.Error()
		}
		e := json.NewEncoder(env.Stdout)
		e.SetIndent("", "  ")
		e.Encode(out)
	} else {
		fmt.Fprintf(env.Stdout, "xen sequential: total %v; target migration %v, Domain M migration %v; waits P1 %v P2 %v P3 %v P4 %v\n",
			ms(r.Total), ms(r.TargetMigration), ms(r.DomMMigration), ms(r.Waits[0]), ms(r.Waits[1]), ms(r.Waits[2]), ms(r.Waits[3]))
		fmt.Fprintf(env.Stdout, "target downtime %v; monitoring gap %v; domain ids %v\n", ms(r.TargetDowntime), ms(r.Gap), r.IDs)
	}
	switch {
	case err != nil && len(r.Violations) > 0:
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v; %v\n", err, r.Timeline.Err())
		return ExitUnwatched
	case errors.Is(err, xenmig.ErrRolledBack):
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v\n", err)
		return ExitRolledBack
	case err != nil:
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v\n", err)
		return ExitPaused
	case len(r.Violations) > 0:
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v\n", r.Timeline.Err())
		return ExitUnwatched
	}
	return ExitOK
}
