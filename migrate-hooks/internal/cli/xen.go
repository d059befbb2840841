package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/domainm/domainm/migrate-hooks/internal/xenmig"
)

// runMigrateXen is `domainm-migrate migrate --xen`: the Xen co-migration, run in the
// source's dom0 (package xenmig: xl, ssh to the destination's dom0, domainm-xen there
// and here).
func runMigrateXen(ctx context.Context, env Env, args []string) int {
	fs := newFlags(env, "migrate --xen", "migrate --xen --dest HOST [--target NAME] [--domm-name NAME] [flags]")
	dest := fs.String("dest", "", "destination host: xl migrate's target, reached as root over ssh")
	target := fs.String("target", "target", "the target's xl domain name")
	domm := fs.String("domm-name", "domainm", "Domain M's xl domain name")
	tool := fs.String("tool", "domainm-xen", "the dom0 tool (grant, request) at both hosts")
	timeout := fs.Duration("timeout", 30*time.Minute, "bound on the whole co-migration")
	asJSON := fs.Bool("json", false, "print the result and its timeline as JSON")
	verbose := fs.Bool("v", false, "log progress")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *dest == "" {
		fmt.Fprintln(env.Stderr, "domainm-migrate migrate --xen: --dest is required")
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := xenmig.Migrate(ctx, xenmig.SSH{}, xenmig.Config{Target: *target, DomM: *domm, Dest: *dest, Tool: *tool, Log: logger(env, *verbose)})
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
	case err != nil:
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v\n", err)
		return ExitPaused
	case len(r.Violations) > 0:
		fmt.Fprintf(env.Stderr, "domainm-migrate: %v\n", r.Timeline.Err())
		return ExitUnwatched
	}
	return ExitOK
}
