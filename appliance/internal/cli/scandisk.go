package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/filescan"
	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/internal/units"
)

func init() {
	register(command{
		name:    "scan-disk",
		summary: "scan every file in a disk image with YARA rules",
		run:     runScanDisk,
		exits: []exit{
			{ExitClean, "no rule matched any file"},
			{ExitFindings, "a rule matched a file (findings printed)"},
			{ExitError, "an error: unreadable image or rules folder, no supported filesystem"},
		},
		examples: []string{
			"domainm scan-disk --image /var/lib/libvirt/images/web-1.qcow2 --format qcow2 --rules /etc/domainm/rules",
			"domainm scan-disk --image web-1.raw --rules ./rules --max-file-size 128MiB --json > findings.jsonl",
		},
	})
}

const diskScanHelp = `
Scan every regular file in the target's disk image (raw or qcow2, bare or partitioned;
read in user space, never mounted) with the YARA rules in DIR. Rules can use the external
variables that rule authors know from Loki and THOR: filename ("sshd"), filepath (the
folder, "/usr/sbin"), extension (lower case with its dot, ".so"; "" when none),
filetype (ELF, EXE, ZIP, GZIP, PDF, SCRIPT or UNKNOWN, from the first bytes), md5 (of
the content) and owner (the owner's user name as the image's /etc/passwd says, else the
uid in decimal).

Files larger than --max-file-size are skipped and listed: each worker holds one whole
file in memory, so memory is at most --workers x --max-file-size. Sizes take IEC or SI
units (64MiB, 500MB; a bare number is bytes).

With --json, every finding is one JSON object per line on stdout; the summary goes to stderr.`

type diskScanSummary struct {
	Image       string               `json:"image"`
	Entries     int64                `json:"entries"`
	Scanned     int64                `json:"files_scanned"`
	Bytes       int64                `json:"bytes_scanned"`
	Skipped     []string             `json:"skipped_too_large,omitempty"`
	Errors      []filescan.PathError `json:"errors,omitempty"`
	Rules       int                  `json:"rules"`
	Findings    int                  `json:"findings"`
	Seconds     float64              `json:"seconds"`
	MBps        float64              `json:"mb_per_s"`
	MaxFileSize int64                `json:"max_file_size"`
	Target      alert.Target         `json:"target"`
}

func runScanDisk(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "scan-disk", "scan-disk --image IMG --rules DIR [--json] [--max-file-size N] [options]", diskScanHelp)
	var d diskFlags
	d.register(fs)
	rulesDir := fs.String("rules", "", "YARA rules `DIR` (*.yar, *.yara, subfolders)")
	maxSize := units.Size(filescan.DefaultMaxSize)
	fs.Var(&maxSize, "max-file-size", "skip files larger than this `SIZE` (64MiB; a bare number is bytes)")
	name := fs.String("name", "", "target `NAME` to put in findings (default: the image path)")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	if err := d.check(); err != nil {
		return ExitError, err
	}
	if *rulesDir == "" {
		return ExitError, errors.New("--rules is required (see --help)")
	}
	rules, err := compileDiskRules(env, "scan-disk", *rulesDir)
	if err != nil {
		return ExitError, err
	}
	fsys, closer, _, err := integrity.OpenImage(d.image, d.format, d.partition)
	if err != nil {
		return ExitError, err
	}
	defer closer.Close()
	warnJournal(env.Stderr, d.image, fsys)
	target := detectors.Target{Name: *name, Source: d.image}
	if target.Name == "" {
		target.Name = d.image
	}
	sc := &filescan.Scanner{FS: fsys, Rules: rules, MaxSize: int64(maxSize), Workers: d.workers, Target: target}
	start := time.Now()
	stop := diskProgress(env, d.quiet, "scan-disk", 0, &sc.Files, &sc.Bytes)
	walked, err := sc.ScanAll(ctx, fsys)
	stop()
	if err != nil {
		return ExitError, err
	}
	elapsed := time.Since(start)
	ys := sc.Result()
	sum := diskScanSummary{Image: d.image, Entries: walked, Scanned: sc.Files.Load(), Bytes: sc.Bytes.Load(),
		Skipped: ys.Skipped, Errors: ys.Errors, Rules: rules.Count(), Findings: len(ys.Findings),
		Seconds: elapsed.Seconds(), MBps: diskMBps(sc.Bytes.Load(), elapsed), MaxFileSize: int64(maxSize), Target: alert.Target(target)}
	if d.json {
		enc := json.NewEncoder(env.Stdout)
		for _, f := range ys.Findings {
			if err := enc.Encode(toFindingJSON(f)); err != nil {
				return ExitError, err
			}
		}
		json.NewEncoder(env.Stderr).Encode(sum)
	} else {
		printFindings(env.Stdout, ys.Findings)
		fmt.Fprintf(env.Stderr, "%s: %d entries, %d files scanned (%.1f MB) in %.2fs, %.1f MB/s; %d skipped (larger than %d bytes), %d unreadable; %d rules, %d findings\n",
			d.image, walked, sum.Scanned, float64(sum.Bytes)/1e6, elapsed.Seconds(), sum.MBps,
			len(ys.Skipped), int64(maxSize), len(ys.Errors), rules.Count(), len(ys.Findings))
		for _, p := range ys.Skipped {
			fmt.Fprintf(env.Stderr, "skipped (too large): %s\n", diskSafe(p))
		}
		for _, e := range ys.Errors {
			fmt.Fprintf(env.Stderr, "unreadable: %s: %s\n", diskSafe(e.Path), diskSafe(e.Error))
		}
	}
	if len(ys.Findings) > 0 {
		return ExitFindings, nil
	}
	return ExitClean, nil
}
