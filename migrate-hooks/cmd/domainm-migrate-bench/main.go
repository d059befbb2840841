// Binary domainm-migrate-bench reproduces the published co-migration experiment
// (migrate-hooks/README.md): for each pair of sizes it boots a target and a Domain M under
// QEMU on two local "hosts", co-migrates them in each mode and prints tables and PNG plots.
//
// It is a lab tool, kept out of domainm-migrate so that the coordinator shipped to
// hypervisor hosts links no plotting library, no stand-in supervisor and no lab.
//
// Exit codes: 0 done; 2 a run failed; 3 a synchronised run left the target unwatched;
// 64 usage error.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/domainm/domainm/migrate-hooks/internal/bench"
	"github.com/domainm/domainm/migrate-hooks/internal/cli"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

const (
	exitOK        = 0
	exitFailed    = 2
	exitUnwatched = 3
	exitUsage     = 64
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("domainm-migrate-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stdout, "Usage: domainm-migrate-bench [--fixed MiB] [--sizes MiB,...] [--reps N] [--nets shaped,unshaped] [--out DIR]")
		fmt.Fprintln(stdout, "\nReproduces the published co-migration experiment (tables and PNG plots).")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
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
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "domainm-migrate-bench: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitUsage
	}
	lvl := slog.LevelWarn
	if *verbose {
		lvl = slog.LevelInfo
	}
	o := bench.Options{Fixed: *fixed, Reps: *reps, Rate: *rate, Accel: *accel, Out: *out,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("component", "domainm-migrate-bench")}
	var err error
	if o.Sizes, err = intList(*sizes); err != nil || o.Fixed <= 0 || o.Reps <= 0 {
		fmt.Fprintf(stderr, "domainm-migrate-bench: bad --sizes/--fixed/--reps (%v)\n", err)
		return exitUsage
	}
	if o.RateBytes, err = bench.ParseRate(*rate); err != nil {
		fmt.Fprintf(stderr, "domainm-migrate-bench: --rate: %v\n", err)
		return exitUsage
	}
	for _, n := range strings.Split(*nets, ",") {
		if n != "shaped" && n != "unshaped" {
			fmt.Fprintf(stderr, "domainm-migrate-bench: unknown net %q\n", n)
			return exitUsage
		}
		o.Nets = append(o.Nets, n)
	}
	for _, m := range strings.Split(*modes, ",") {
		mode, err := cli.ParseMode(m)
		if err != nil {
			fmt.Fprintf(stderr, "domainm-migrate-bench: %v\n", err)
			return exitUsage
		}
		o.Modes = append(o.Modes, mode)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		fmt.Fprintf(stderr, "domainm-migrate-bench: %v\n", err)
		return exitFailed
	}
	return report(ctx, o, *asJSON, stdout, stderr)
}

// report runs the experiment and writes results.json, tables.txt and the plots.
func report(ctx context.Context, o bench.Options, asJSON bool, stdout, stderr io.Writer) int {
	runs, err := bench.Execute(ctx, o, stderr)
	b, _ := json.MarshalIndent(runs, "", "  ")
	if werr := os.WriteFile(filepath.Join(o.Out, "results.json"), b, 0o644); werr != nil {
		fmt.Fprintf(stderr, "domainm-migrate-bench: %v\n", werr)
	}
	if asJSON {
		stdout.Write(append(b, '\n'))
	} else {
		tables := bench.Tables(o, runs)
		fmt.Fprint(stdout, tables)
		if werr := os.WriteFile(filepath.Join(o.Out, "tables.txt"), []byte(tables), 0o644); werr != nil {
			fmt.Fprintf(stderr, "domainm-migrate-bench: %v\n", werr)
		}
	}
	if pngs, perr := bench.Plot(o, runs); perr != nil {
		fmt.Fprintf(stderr, "domainm-migrate-bench: plots: %v\n", perr)
	} else {
		fmt.Fprintf(stderr, "plots: %s\n", strings.Join(pngs, " "))
	}
	if err != nil {
		fmt.Fprintf(stderr, "domainm-migrate-bench: %v\n", err)
		return exitFailed
	}
	for _, r := range runs {
		if gap, _ := r.Result.Gap.Get(); gap > 0 && r.Mode != syncpoint.NoSync.String() {
			fmt.Fprintf(stderr, "domainm-migrate-bench: %s %s run left the target unwatched for %v\n", r.Net, r.Mode, r.Result.Gap)
			return exitUnwatched
		}
	}
	return exitOK
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
