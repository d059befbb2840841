package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/domainm/domainm/migrate-hooks/bench"
	"github.com/domainm/domainm/migrate-hooks/syncpoint"
)

func init() {
	register(command{"bench", "reproduce the published co-migration experiment (tables and PNG plots)", runBench})
}

func runBench(ctx context.Context, env Env, args []string) int {
	fs := newFlags(env, "bench", "bench [--fixed MiB] [--sizes MiB,...] [--reps N] [--nets shaped,unshaped] [--out DIR]")
	fixed := fs.Int("fixed", 1024, "MiB of the VM held fixed (published: 1024)")
	sizes := fs.String("sizes", "1024,512,256", "MiB of the varied VM")
	reps := fs.Int("reps", 10, "runs per cell (published: 10)")
	nets := fs.String("nets", "shaped,unshaped", "shaped (two network namespaces, veth, tc tbf at --rate) and/or unshaped (loopback)")
	modes := fs.String("modes", "nosync,sync,paced", "modes to run")
	rate := fs.String("rate", "1gbit", "tc rate of the shaped link")
	accel := fs.String("accel", "auto", "kvm, tcg, or auto (KVM if a Linux guest boots under it)")
	out := fs.String("out", "bench-migrate", "folder for results.json, tables.txt and the PNG plots")
	asJSON := fs.Bool("json", false, "print the runs as JSON instead of tables")
	verbose := fs.Bool("v", false, "log the coordinator's progress")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	o := bench.Options{Fixed: *fixed, Reps: *reps, Rate: *rate, Accel: *accel, Out: *out, Log: logger(env, *verbose)}
	var err error
	if o.Sizes, err = intList(*sizes); err != nil || o.Fixed <= 0 || o.Reps <= 0 {
		fmt.Fprintf(env.Stderr, "domainm-migrate bench: bad --sizes/--fixed/--reps (%v)\n", err)
		return ExitUsage
	}
	if o.RateBytes, err = bench.ParseRate(*rate); err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate bench: --rate: %v\n", err)
		return ExitUsage
	}
	for _, n := range strings.Split(*nets, ",") {
		if n != "shaped" && n != "unshaped" {
			fmt.Fprintf(env.Stderr, "domainm-migrate bench: unknown net %q\n", n)
			return ExitUsage
		}
		o.Nets = append(o.Nets, n)
	}
	for _, m := range strings.Split(*modes, ",") {
		mode, err := parseMode(m)
		if err != nil {
			fmt.Fprintf(env.Stderr, "domainm-migrate bench: %v\n", err)
			return ExitUsage
		}
		o.Modes = append(o.Modes, mode)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate bench: %v\n", err)
		return ExitPaused
	}
	runs, err := bench.Execute(ctx, o, env.Stderr)
	b, _ := json.MarshalIndent(runs, "", "  ")
	os.WriteFile(filepath.Join(o.Out, "results.json"), b, 0o644)
	if *asJSON {
		env.Stdout.Write(append(b, '\n'))
	} else {
		tables := bench.Tables(o, runs)
		fmt.Fprint(env.Stdout, tables)
		os.WriteFile(filepath.Join(o.Out, "tables.txt"), []byte(tables), 0o644)
	}
	pngs, perr := bench.Plot(o, runs)
	if perr != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate bench: plots: %v\n", perr)
	} else {
		fmt.Fprintf(env.Stderr, "plots: %s\n", strings.Join(pngs, " "))
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "domainm-migrate bench: %v\n", err)
		return ExitPaused
	}
	for _, r := range runs {
		if r.Result.Gap > 0 && r.Mode != syncpoint.NoSync.String() {
			fmt.Fprintf(env.Stderr, "domainm-migrate bench: %s %s run left the target unwatched for %v\n", r.Net, r.Mode, r.Result.Gap)
			return ExitUnwatched
		}
	}
	return ExitOK
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad size %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}
