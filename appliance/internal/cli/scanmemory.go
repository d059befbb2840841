package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/domainm/domainm/appliance/internal/supervisor"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/internal/units"
	"github.com/domainm/domainm/memscan"
)

func init() {
	register(command{name: "scan-memory", summary: "scan a VM's guest-physical memory with YARA rules, once", run: runScanMemory,
		exits: []exit{
			{ExitClean, "no rule matched"},
			{ExitFindings, "a rule matched (findings printed)"},
			{ExitError, "an error: unreadable source or rules folder, a block that could not be scanned,\na rule file that does not compile (left out; the rest scanned and reported)"},
		},
		examples: []string{
			"domainm scan-memory --source file:/dev/shm/web-1.ram --rules /etc/domainm/rules",
			"domainm scan-memory --source elf:/var/tmp/web-1.core --rules /etc/domainm/rules --block-size 4MiB --timeout 30s --json > findings.jsonl",
		}})
}

func runScanMemory(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "scan-memory", "scan-memory --source SPEC --rules DIR [options]",
		`Scans a target's guest-physical memory once with the YARA rules in DIR and prints every
rule that matched, with the guest-physical address of each match and, when the source
holds a Linux guest (x86-64, a kernel with BTF), who holds it: the processes that map its
page (pid, comm, virtual address; a page shared by several processes lists them all, by
pid) or the kernel (a module, named; the kernel image; or the direct map, for kernel
memory no process maps). The guest's layout is derived from its memory alone (see
domainm inspect); when it cannot be, the summary says why and matches carry
guest-physical addresses only.

With that layout, the guest's virtual address spaces are scanned too (--virtual): pages
adjacent in a process (or in the kernel's module and vmalloc areas) are rarely adjacent
in physical memory, so a string across such a boundary (a seam) is split in two places
of RAM. Each physical page is scanned once, in the physical pass; then only a window
around each distinct seam (2 KiB on each side) is scanned, and only matches that cross
it are kept, marked virtual, with the physical address of the first byte and the
virtual address in each process that has the seam. A string of up to 2 KiB across a
page boundary is found.

Memory sources (--source):
  file:PATH   QEMU memory-backend-file RAM file (/dev/shm/..., hugetlbfs), the resource2
              file of an ivshmem-plain device seen from inside a VM, or a flat raw dump
  elf:PATH    ELF core from QEMU dump-guest-memory / virsh dump --memory-only
  xen:DOMID   a Xen domain, through /dev/xen/privcmd
  xen:granted the Xen domain dom0's domainm-xen grant named last (xenstore domainm/target,
              read once at start; in Domain M)

Layouts (--layout, file: sources only): flat (file offset = address), q35 or pc (QEMU's
split around the PCI hole for a guest of the file's size), split:LOWMEM (RAM above LOWMEM
appears at 4 GiB; split:2GiB, split:0x80000000), or an explicit list GPA+SIZE@OFFSET,...
(sizes as below, or "0x..." hex bytes)

Memory is scanned in windows of --block-size plus --overlap (the daemon's memory.block_size
and memory.overlap, with the same defaults and bounds: a multiple of 4KiB from 64KiB to
1GiB, an overlap under half of it). Sizes take IEC or SI units (4MiB, 64KiB, 500MB; a bare
number is bytes), durations a unit (30s, 1m). YARA sees each window as memory at its guest-physical
address, as yara -p sees a process: filesize is undefined, offsets and uint16(N) are
addresses, counts (#a) are per window. Rules whose meaning depends on that are marked
window_dependent in --json (domainm rules check lists them).`)
	source := fs.String("source", "", "memory source `SPEC` (file:PATH, elf:PATH, xen:DOMID, xen:granted)")
	var layout memscan.Layout
	fs.Var(&layout, "layout", "how file offsets map to guest-physical addresses (`LAYOUT`: flat, q35, pc, split:SIZE, list)")
	rulesDir := fs.String("rules", "", "rules `DIR` (*.yar, *.yara, subfolders)")
	workers := fs.Int("workers", 0, "`N` parallel scanners (default: number of CPUs)")
	blockSize := units.Size(memscan.DefaultBlockSize)
	fs.Var(&blockSize, "block-size", "window `SIZE` (4MiB, 256KiB; a bare number is bytes)")
	overlap := units.Size(memscan.DefaultOverlap)
	fs.Var(&overlap, "overlap", "`SIZE` each window reaches into the next: the longest string found across a block boundary")
	timeout := units.Duration(yara.DefaultBlockTimeout)
	fs.Var(&timeout, "timeout", "YARA time limit per block (`DURATION` in whole seconds: 30s, 1m)")
	runBudget := units.Duration(0)
	fs.Var(&runBudget, "run-budget", "rule-engine CPU time a worker takes on at once, up to 32 windows (`DURATION`, the daemon's memory.run_budget: how soon a cancelled pass returns); 0s: no bound, runs of 32 windows, as a one-shot scan answers no prepare")
	maxMatches := fs.Int("max-matches", yara.DefaultMaxMatchesPerRule, "`N` string matches kept per rule and window (the rest are counted as cut)")
	asJSON := fs.Bool("json", false, "print one JSON object per finding, addresses as \"0x...\" (and a summary object on stderr)")
	name := fs.String("name", "", "target `NAME` to put in findings (default: the source spec)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	attrib := fs.Bool("attribute", true, "name the guest processes (pid, comm, virtual address) or the part of the kernel holding each match, when the source holds a Linux guest")
	virtual := fs.Bool("virtual", true, "also scan the guest's virtual address spaces across page boundaries whose pages are not physically adjacent (needs --attribute)")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	if *source == "" || *rulesDir == "" {
		return ExitError, errors.New("--source and --rules are required (see --help)")
	}

	if *maxMatches < 1 {
		return ExitError, errors.New("--max-matches must be at least 1")
	}
	if t := time.Duration(timeout); t < time.Second || t%time.Second != 0 {
		// libyara 4.2.3 counts its time limit in whole seconds; less than one is none.
		return ExitError, &usageError{fmt.Sprintf("--timeout must be whole seconds, at least 1s, got %v", t)}
	}
	if b := time.Duration(runBudget); b < 0 || b > time.Second {
		return ExitError, &usageError{fmt.Sprintf("--run-budget: expected a duration from 0s (no bound) to 1s, got %v", b)}
	}
	if err := checkWindow(int64(blockSize), int64(overlap)); err != nil {
		return ExitError, err
	}
	rules, err := yara.Compile(*rulesDir)
	var ce *yara.CompileError
	switch {
	case errors.As(err, &ce) && rules != nil:
		// The broken files are left out and the rest scans; the exit code still says 2.
		for _, e := range ce.Errors {
			fmt.Fprintf(env.Stderr, "domainm scan-memory: %s: error: %s (file left out)\n", joinPath(*rulesDir, e.File, e.Line), e.Text)
		}
	case errors.Is(err, yara.ErrNoRules):
		fmt.Fprintf(env.Stderr, "domainm scan-memory: warning: %v: nothing can match\n", err)
	case err != nil:
		return ExitError, err
	}
	spec, err := supervisor.ResolveSpec(*source)
	if err != nil {
		return ExitError, err
	}
	src, err := memscan.Open(spec, memscan.OpenOptions{Layout: layout})
	if err != nil {
		return ExitError, err
	}
	defer src.Close()

	budget := time.Duration(runBudget)
	if budget == 0 {
		budget = -1 // the driver's "no bound"
	}
	d := memscan.NewDriver(memscan.DriverConfig{BlockSize: int(blockSize), Overlap: int(overlap), Workers: *workers, RunBudget: budget,
		InPlace: true}) // one pass: nothing is reused, so a sealed memfd needs no copy
	rs := yara.MemoryRules{Rules: rules, Timeout: time.Duration(timeout), MaxMatches: *maxMatches}
	opts := memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}
	total := memscan.TotalSize(src.Ranges())
	if !*quiet && env.isTerminal(env.Stderr) {
		bar := progressbar.NewOptions64(int64(total),
			progressbar.OptionSetWriter(env.Stderr),
			progressbar.OptionSetDescription("scanning "+*source),
			progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		opts.Progress = func(done, _ uint64) { bar.Set64(int64(done)) }
		defer bar.Finish()
	}
	start := time.Now()
	res, err := d.Pass(ctx, src, opts)
	if err != nil {
		return ExitError, err
	}
	elapsed := time.Since(start)
	if !res.Complete {
		return ExitError, fmt.Errorf("interrupted at %#x", res.Cursor)
	}
	target := detectors.Target{Name: *name, Source: *source}
	if target.Name == "" {
		target.Name = *source
	}
	attr := attribution{Error: "--attribute=false"}
	if *attrib {
		res.Matches, attr = guestScan(ctx, src, res.Matches, rs, *virtual, *workers)
	}
	findings := yara.MemoryFindings(res.Matches, target, time.Now().UTC())
	sum := summary{
		Source: *source, Bytes: res.BytesTotal, BytesScanned: res.BytesScanned,
		Blocks: res.Blocks, BlocksZero: res.BlocksZero, BlocksScanned: res.BlocksScanned,
		Rules: rules.Count(), Findings: len(findings), Errors: len(res.Errors),
		Seconds: elapsed.Seconds(), MBps: float64(res.BytesTotal) / 1e6 / elapsed.Seconds(),
		BlockSize: d.Config().BlockSize, Overlap: d.Config().Overlap, MaxMatches: *maxMatches,
		WindowRules: len(rules.WindowRules()), Attribution: attr,
	}
	if ce != nil {
		sum.RuleErrors = len(ce.Errors)
	}
	for _, f := range findings {
		sum.MatchesCut += f.MatchesCut
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		for _, f := range findings {
			if err := enc.Encode(toFindingJSON(f)); err != nil {
				return ExitError, err
			}
		}
		json.NewEncoder(env.Stderr).Encode(sum)
	} else {
		printFindings(env.Stdout, findings)
		fmt.Fprintf(env.Stderr, "%s: %s in %d blocks (%d zero, skipped; %d scanned) in %.2fs, %.0f MB/s; %d rules, %d findings\n",
			*source, humanBytes(res.BytesTotal), res.Blocks, res.BlocksZero, res.BlocksScanned,
			elapsed.Seconds(), sum.MBps, rules.Count(), len(findings))
		fmt.Fprintf(env.Stderr, "%s: %s\n", *source, attr.say())
		if sum.MatchesCut > 0 {
			fmt.Fprintf(env.Stderr, "%s: %d matches found but not listed (at most %d per rule and window, %d per rule and pass; --max-matches)\n",
				*source, sum.MatchesCut, *maxMatches, memscan.MaxAddressesPerRule)
		}
	}
	for _, e := range res.Errors {
		fmt.Fprintf(env.Stderr, "domainm scan-memory: %v\n", e)
	}
	if len(res.Errors) > 0 {
		return ExitError, fmt.Errorf("%d block(s) could not be scanned", len(res.Errors))
	}
	if ce != nil {
		return ExitError, fmt.Errorf("%d rule file(s) do not compile and were left out", len(ce.Left))
	}
	if len(findings) > 0 {
		return ExitFindings, nil
	}
	return ExitClean, nil
}

// checkWindow checks --block-size and --overlap with the bounds the configuration
// puts on memory.block_size and memory.overlap.
func checkWindow(block, overlap int64) error {
	if block < 64<<10 || block > 1<<30 || block%4096 != 0 {
		return &usageError{fmt.Sprintf("--block-size: expected a multiple of 4KiB from 64KiB to 1GiB, got %d bytes", block)}
	}
	if overlap < 1 || overlap >= block/2 {
		return &usageError{fmt.Sprintf("--overlap: expected at least 1 byte and less than half of --block-size (%d bytes), got %d bytes", block/2, overlap)}
	}
	return nil
}

type summary struct {
	Source        string  `json:"source"`
	Bytes         uint64  `json:"bytes"`
	BytesScanned  uint64  `json:"bytes_scanned"`
	Blocks        int     `json:"blocks"`
	BlocksZero    int     `json:"blocks_zero"`
	BlocksScanned int     `json:"blocks_scanned"`
	Rules         int     `json:"rules"`
	Findings      int     `json:"findings"`
	Errors        int     `json:"errors"`
	Seconds       float64 `json:"seconds"`
	MBps          float64 `json:"mb_per_s"`
	BlockSize     int     `json:"block_size"`
	Overlap       int     `json:"overlap"`
	MaxMatches    int     `json:"max_matches_per_rule"`
	MatchesCut    int     `json:"matches_cut"`  // matches found but not listed, all findings
	WindowRules   int     `json:"window_rules"` // rules whose meaning depends on the window
	RuleErrors    int     `json:"rule_errors,omitempty"`
	// Attribution says whether matches name the guest processes holding them.
	Attribution attribution `json:"attribution"`
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}
