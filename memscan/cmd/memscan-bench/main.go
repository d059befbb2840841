// Command bench compares `domainm scan-memory` with the yara CLI on guest memory images,
// in the same run, and prints a table of CPU and wall ratios (make bench-memscan).
//
// Rows, each yara and domainm alternating, best and median of -reps runs:
//   - the bench image (default 1 GiB) with 128 synthetic rules;
//   - a dense image (no zero pages) with 5 literal rules, 1 and 2 workers: here the work
//     around libyara (copy, change hash, zero test, set-up per window) is most visible;
//     and the same bytes in a memfd sealed against shrinking, which domainm scans in
//     place (no copy), as it would QEMU's memory-backend-memfd;
//   - the dense image with a public rule set (-public, elastic's 3,021 rules by default,
//     read in place, never copied);
//   - domainm rows run scan-memory --attribute=false, the scan alone as yara does it; one
//     row runs it with its defaults, which add the search for a Linux guest's layout in
//     memory (on these images, which hold no kernel, one more read of all memory);
//   - with -callgrind N, instruction counts of both tools on N bytes of the dense image
//     (cheap rules, the bench's rules and public rules), which the machine's load does not move;
//   - the driver in-process: first pass and second pass over unchanged memory;
//   - in-process, side by side: the driver's first pass (1 worker) against libyara
//     scanning the same bytes as one block, on the dense image with the cheap and the
//     public rules (the cost of the work around libyara, without start-up or noise
//     between processes).
//
// CPU is the child's user+sys time (getrusage), which is less disturbed by a loaded
// machine than wall time. "CPU per byte" subtracts each tool's CPU on a one-page image
// of the same rules (start-up and rule compilation), so it compares the scan itself.
// -scale also runs a 4x larger bench image and reports how time and peak memory grow.
//
// The bench image is built page by page in runs that imitate a booted guest: zero pages
// (free memory), random pages (compressed or encrypted data), text pages (documentation
// and configuration files from this machine) and ELF pages (executables and libraries
// from this machine). The rule set mixes text, wide, nocase, hex-with-jumps and
// regular-expression strings; a known number of rules are planted so that both tools
// must report them.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

type config struct {
	size, denseSize, publicSize int64
	nrules                      int
	dir, domainm, public, prof  string
	before                      string // another domainm binary, run in turn with the two
	keep, scale                 bool
	reps                        int
	callgrind                   int64 // bytes of the dense image counted under callgrind (0: not run)
}

func main() {
	var c config
	flag.Int64Var(&c.size, "size", 1<<30, "bench image size in bytes")
	flag.Int64Var(&c.denseSize, "dense-size", 256<<20, "dense image size in bytes (0: no dense rows)")
	flag.Int64Var(&c.publicSize, "public-size", 64<<20, "bytes of the dense image scanned with the public rule set")
	flag.IntVar(&c.nrules, "rules", 128, "number of rules")
	flag.StringVar(&c.dir, "dir", "/dev/shm/domainm-bench", "work folder (images and rules)")
	flag.StringVar(&c.domainm, "domainm", "bin/domainm", "domainm binary")
	flag.StringVar(&c.before, "before", "", "another domainm binary (say, a build before a change), run in turn with yara and -domainm: its CPU ratio to yara is printed too")
	flag.StringVar(&c.public, "public", "../shared/corpora/yara-rules/elastic-protections-artifacts/yara/rules", "public rule set folder (skipped when missing)")
	flag.StringVar(&c.prof, "cpuprofile", "", "folder to write CPU profiles of the in-process driver passes to")
	flag.BoolVar(&c.keep, "keep", false, "keep the images for the next run")
	flag.BoolVar(&c.scale, "scale", false, "also run a 4x larger bench image (time and peak memory growth)")
	flag.IntVar(&c.reps, "reps", 3, "runs of each CLI (alternating)")
	flag.Int64Var(&c.callgrind, "callgrind", 0, "also count instructions (valgrind --tool=callgrind) of yara and domainm on this many bytes of the dense image, cheap and public rules: a measure the machine's load does not move")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	if err := os.MkdirAll(filepath.Join(c.dir, "rules"), 0o755); err != nil {
		return err
	}
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at start: %s", load)
	}
	rng := rand.New(rand.NewPCG(42, 7))
	rules, planted := makeRules(rng, c.nrules)
	rulesFile := filepath.Join(c.dir, "rules", "bench.yar")
	if err := os.WriteFile(rulesFile, []byte(rules), 0o644); err != nil {
		return err
	}
	img := filepath.Join(c.dir, fmt.Sprintf("mem-%d.raw", c.size))
	if !c.keep {
		defer os.Remove(img)
	}
	mix, err := makeImage(img, c.size, rng, planted, false)
	if err != nil {
		return err
	}
	fmt.Printf("bench image %s: %s, %s\n", img, human(c.size), mix)
	fmt.Printf("rules: %d (%d planted in the image), %d CPUs\n\n", c.nrules, len(planted), runtime.NumCPU())
	tiny := filepath.Join(c.dir, "one-page.raw")
	if err := os.WriteFile(tiny, bytes.Repeat([]byte("page"), 1024), 0o644); err != nil {
		return err
	}
	defer os.Remove(tiny)

	t := &table{}
	benchRow, err := t.compare(c, fmt.Sprintf("bench image %s, %d rules, 2 workers", human(c.size), c.nrules),
		[]string{"yara", "-s", "-w", rulesFile}, filepath.Dir(rulesFile), img, tiny, 0, scanOnly...)
	if err != nil {
		return err
	}
	if diff := compare(benchRow.yaraHits, benchRow.dmHits); diff != "" {
		return fmt.Errorf("domainm and yara disagree on the bench image: %s", diff)
	}

	var dense string
	if c.denseSize > 0 {
		dense = filepath.Join(c.dir, fmt.Sprintf("dense-%d.raw", c.denseSize))
		if !c.keep {
			defer os.Remove(dense)
		}
		if _, err := makeImage(dense, c.denseSize, rand.New(rand.NewPCG(43, 8)), planted, true); err != nil {
			return err
		}
		cheap := filepath.Join(c.dir, "cheap")
		if err := writeCheapRules(cheap, planted); err != nil {
			return err
		}
		for _, w := range []int{1, 2} {
			r, err := t.compare(c, fmt.Sprintf("dense %s, 5 literal rules, %d worker(s)", human(c.denseSize), w),
				[]string{"yara", "-s", "-w", filepath.Join(cheap, "cheap.yar")}, cheap, dense, tiny, w, scanOnly...)
			if err != nil {
				return err
			}
			if diff := compare(r.yaraHits, r.dmHits); diff != "" {
				return fmt.Errorf("domainm and yara disagree on the dense image: %s", diff)
			}
		}
		// scan-memory as shipped: it also looks for a Linux guest's layout in memory to
		// attribute matches (--attribute, on by default), which yara does not do; on
		// these images (no kernel) that is one more read of all memory.
		if _, err := t.compare(c, fmt.Sprintf("dense %s, 5 literal rules, 1 worker, CLI defaults", human(c.denseSize)),
			[]string{"yara", "-s", "-w", filepath.Join(cheap, "cheap.yar")}, cheap, dense, tiny, 1); err != nil {
			return err
		}
		// The same bytes in a memfd sealed against shrinking (as QEMU's
		// memory-backend-memfd holds guest RAM): domainm scans it in place, no copy.
		memfd, closeMemfd, err := sealedMemfd(dense)
		if err != nil {
			return err
		}
		defer closeMemfd()
		r, err := t.compare(c, fmt.Sprintf("dense %s, 5 literal rules, 1 worker, sealed memfd", human(c.denseSize)),
			[]string{"yara", "-s", "-w", filepath.Join(cheap, "cheap.yar")}, cheap, memfd, tiny, 1, scanOnly...)
		if err != nil {
			return err
		}
		if diff := compare(r.yaraHits, r.dmHits); diff != "" {
			return fmt.Errorf("domainm and yara disagree on the sealed memfd: %s", diff)
		}
		if files, _ := filepath.Glob(filepath.Join(c.public, "*.yar")); len(files) > 0 {
			part := filepath.Join(c.dir, fmt.Sprintf("dense-%d.raw", c.publicSize))
			if err := head(dense, part, c.publicSize); err != nil {
				return err
			}
			defer os.Remove(part)
			r, err := t.compare(c, fmt.Sprintf("dense %s, public rules (%d files: %s), 1 worker", human(c.publicSize), len(files), filepath.Base(filepath.Dir(filepath.Dir(c.public)))),
				append([]string{"yara", "-s", "-w"}, files...), c.public, part, tiny, 1, scanOnly...)
			if err != nil {
				return err
			}
			if diff := compare(r.yaraHits, r.dmHits); diff != "" {
				fmt.Printf("note: public rule set findings differ: %s\n", diff)
			}
		} else {
			fmt.Printf("public rule set row skipped: no *.yar in %s\n", c.public)
		}
	}
	t.print()
	if c.callgrind > 0 && dense != "" {
		if err := instructions(c, dense, tiny); err != nil {
			return err
		}
	}

	fmt.Println()
	d1, err := driverPasses(c, "bench", img, filepath.Dir(rulesFile))
	if err != nil {
		return err
	}
	if dense != "" {
		if _, err := driverPasses(c, "dense-cheap", dense, filepath.Join(c.dir, "cheap")); err != nil {
			return err
		}
		fmt.Println()
		if err := oneBlock(c, "dense, 5 literal rules", dense, filepath.Join(c.dir, "cheap"), false); err != nil {
			return err
		}
		if memfd, closeMemfd, err := sealedMemfd(dense); err == nil {
			err = oneBlock(c, "dense, cheap, sealed memfd, in place (scan-memory)", memfd, filepath.Join(c.dir, "cheap"), true)
			closeMemfd()
			if err != nil {
				return err
			}
		}
		if files, _ := filepath.Glob(filepath.Join(c.public, "*.yar")); len(files) > 0 {
			part := filepath.Join(c.dir, fmt.Sprintf("dense-%d.raw", c.publicSize))
			if err := head(dense, part, c.publicSize); err != nil {
				return err
			}
			defer os.Remove(part)
			if err := oneBlock(c, "dense, public rules", part, c.public, false); err != nil {
				return err
			}
		}
	}
	fmt.Printf("findings identical on the bench image: %d rules, %d addresses\n", len(benchRow.yaraHits), countAddrs(benchRow.yaraHits))
	gbCPU := float64(c.size) / 1e9 / d1.cpu2.Seconds()
	fmt.Printf("unchanged pass, bench image: %.1f GB/s wall; %.1f GB per CPU-second, so %.1f GB/s on 2 cores when they are free (goal >= 15)\n", d1.gbs2, gbCPU, 2*gbCPU)
	fmt.Printf("a 4 GiB target every 5m (memory.interval): %.2f CPU-s per unchanged pass, %.3f%% of one core\n",
		d1.cpu2.Seconds()*4*(1<<30)/float64(c.size), 100*d1.cpu2.Seconds()*4*(1<<30)/float64(c.size)/300)
	if c.scale {
		if err := scale(c, img, rulesFile, planted, benchRow); err != nil {
			return err
		}
	}
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at end: %s", load)
	}
	return nil
}

// run is one finished child process.
type runStat struct {
	cpu, wall time.Duration
	// peakAnon is RssAnon sampled from /proc every 5 ms, in KiB: the process's own
	// memory, without the image's mapped pages (getrusage's maxrss counts those, and on
	// Linux a child inherits the parent's maxrss at fork, so it is not used).
	peakAnon int64
	out      []byte
}

// runCmd runs args, sampling its anonymous memory; exit status 1 (findings) is success.
func runCmd(args []string) (runStat, error) {
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return runStat{}, err
	}
	done := make(chan struct{})
	var peak int64
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if v := rssAnon(cmd.Process.Pid); v > peak {
				peak = v
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	err := cmd.Wait()
	wall := time.Since(t0)
	close(done)
	if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 1) {
		return runStat{}, fmt.Errorf("%s: %w", args[0], err)
	}
	ps := cmd.ProcessState
	return runStat{cpu: ps.UserTime() + ps.SystemTime(), wall: wall, peakAnon: peak, out: out.Bytes()}, nil
}

func rssAnon(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// scanOnly: scan-memory without attribution (no search for a Linux guest's layout in
// memory), the same work as yara's.
var scanOnly = []string{"--attribute=false"}

type row struct {
	name             string
	bytes            int64
	yara, dm         []runStat // on the image
	yaraBase, dmBase []runStat // on one page (start-up and compilation)
	cpuRatios        []float64 // domainm/yara CPU, pair by pair
	beforeRatios     []float64 // the -before binary's CPU over yara's, in the same turns
	yaraHits, dmHits hits
}

type table struct{ rows []*row }

// compare runs yara and domainm alternating c.reps times on img and once each on tiny;
// dmExtra are domainm's further arguments.
func (t *table) compare(c config, name string, yaraArgs []string, rulesDir, img, tiny string, workers int, dmExtra ...string) (*row, error) {
	fi, err := os.Stat(img)
	if err != nil {
		return nil, err
	}
	// Fault the image into memory once so neither tool pays for it.
	if _, err := exec.Command("cat", img).Output(); err != nil {
		return nil, err
	}
	var dmArgsOf func(bin, target string) []string
	dmArgs := func(target string) []string {
		return dmArgsOf(c.domainm, target)
	}
	dmArgsOf = func(bin, target string) []string {
		a := append([]string{bin, "scan-memory", "--source", "file:" + target, "--rules", rulesDir, "--json", "--quiet"}, dmExtra...)
		if workers > 0 {
			a = append(a, "--workers", strconv.Itoa(workers))
		}
		return a
	}
	r := &row{name: name, bytes: fi.Size()}
	for i := range c.reps {
		y, err := runCmd(append(append([]string(nil), yaraArgs...), img))
		if err != nil {
			return nil, err
		}
		d, err := runCmd(dmArgs(img))
		if err != nil {
			return nil, err
		}
		r.yara, r.dm = append(r.yara, y), append(r.dm, d)
		r.cpuRatios = append(r.cpuRatios, d.cpu.Seconds()/y.cpu.Seconds())
		if c.before != "" {
			b, err := runCmd(dmArgsOf(c.before, img))
			if err != nil {
				return nil, err
			}
			r.beforeRatios = append(r.beforeRatios, b.cpu.Seconds()/y.cpu.Seconds())
		}
		if i == 0 {
			r.yaraHits = parseYara(string(y.out))
			if r.dmHits, err = parseDomainm(d.out); err != nil {
				return nil, err
			}
		}
		if i < 2 {
			yb, err := runCmd(append(append([]string(nil), yaraArgs...), tiny))
			if err != nil {
				return nil, err
			}
			db, err := runCmd(dmArgs(tiny))
			if err != nil {
				return nil, err
			}
			r.yaraBase, r.dmBase = append(r.yaraBase, yb), append(r.dmBase, db)
		}
	}
	t.rows = append(t.rows, r)
	return r, nil
}

func (t *table) print() {
	fmt.Printf("%-62s %7s %7s %7s %7s %7s %8s %8s\n", "row (CPU and wall: median of runs)", "yaraCPU", "dmCPU", "CPU", "CPU/B", "yaraW", "dmWall", "wall")
	fmt.Printf("%-62s %7s %7s %7s %7s %7s %8s %8s\n", "", "s", "s", "dm/yara", "dm/yara", "s", "s", "yara/dm")
	for _, r := range t.rows {
		yc, dc := median(r.yara, cpuOf), median(r.dm, cpuOf)
		yb, db := median(r.yaraBase, cpuOf), median(r.dmBase, cpuOf)
		yw, dw := median(r.yara, wallOf), median(r.dm, wallOf)
		perByte := (dc - db) / (yc - yb)
		fmt.Printf("%-62s %7.3f %7.3f %7.3f %7.3f %7.3f %8.3f %7.2fx", r.name, yc, dc, medianF(r.cpuRatios), perByte, yw, dw, yw/dw)
		if len(r.beforeRatios) > 0 {
			fmt.Printf("   before: CPU %.3f (%.2f-%.2f)", medianF(r.beforeRatios), slices.Min(r.beforeRatios), slices.Max(r.beforeRatios))
		}
		fmt.Println()
	}
	fmt.Println("CPU dm/yara: median of the per-pair ratios; CPU/B: (CPU on the image - CPU on one page) per tool, domainm over yara;")
	fmt.Println("the bench image is 54% zero pages, which domainm skips and yara scans. domainm runs with --attribute=false (the scan")
	fmt.Println("alone, as yara), except in the \"CLI defaults\" row, which adds the search for a Linux guest's layout in memory.")
}

func cpuOf(s runStat) float64  { return s.cpu.Seconds() }
func wallOf(s runStat) float64 { return s.wall.Seconds() }

func median(rs []runStat, f func(runStat) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return medianF(v)
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

type passes struct {
	wall1, wall2, cpu1, cpu2 time.Duration
	gbs2                     float64
	p1, p2                   memscan.PassResult
}

// driverPasses runs the driver in-process (2 workers, as the daemon on this machine):
// a first pass and a second over unchanged memory, with process CPU and optional profiles.
func driverPasses(c config, name, img, rulesDir string) (passes, error) {
	var ps passes
	r, err := yara.Compile(rulesDir)
	if err != nil {
		return ps, err
	}
	src, err := memscan.Open("file:"+img, memscan.OpenOptions{})
	if err != nil {
		return ps, err
	}
	defer src.Close()
	size := memscan.TotalSize(src.Ranges())
	d := memscan.NewDriver(memscan.DriverConfig{})
	rs := ruleSet{r}
	opts := memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}
	pass := func(label string) (memscan.PassResult, time.Duration, time.Duration, error) {
		if c.prof != "" {
			f, err := os.Create(filepath.Join(c.prof, fmt.Sprintf("%s-%s.pprof", label, name)))
			if err != nil {
				return memscan.PassResult{}, 0, 0, err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return memscan.PassResult{}, 0, 0, err
			}
			defer pprof.StopCPUProfile()
		}
		c0, t0 := processCPU(), time.Now()
		p, err := d.Pass(context.Background(), src, opts)
		return p, time.Since(t0), processCPU() - c0, err
	}
	if ps.p1, ps.wall1, ps.cpu1, err = pass("pass1"); err != nil {
		return ps, err
	}
	if ps.p2, ps.wall2, ps.cpu2, err = pass("pass2"); err != nil {
		return ps, err
	}
	ps.gbs2 = float64(size) / 1e9 / ps.wall2.Seconds()
	fmt.Printf("driver %-12s %s, %d workers: pass 1 %.3f s wall %.3f CPU-s (%d blocks, %d zero, %d scanned, %d settled by the screen, %d rules matched); pass 2 (unchanged) %.3f s wall %.3f CPU-s = %.1f GB/s (%d unchanged, %d scanned)\n",
		name, human(int64(size)), d.Config().Workers, ps.wall1.Seconds(), ps.cpu1.Seconds(), ps.p1.Blocks, ps.p1.BlocksZero, ps.p1.BlocksScanned, ps.p1.BlocksScreened, len(ps.p1.Matches),
		ps.wall2.Seconds(), ps.cpu2.Seconds(), ps.gbs2, ps.p2.BlocksUnchanged, ps.p2.BlocksScanned)
	return ps, nil
}

// oneBlock compares, in this process and in turn, a first pass of the driver (one
// worker: copy, change hash, zero test, runs of windows screened in one libyara scan and
// the windows with a hit scanned alone), the same with every window scanned alone
// (Batch 1, as before screening), and libyara scanning the same mapping as one memory
// block (what yara does with a file: one scan), 3 times each, by process CPU. Side by side in one process, it is steadier than the CLI rows on a
// loaded machine, and it isolates the scan from start-up, compilation and attribution.
// inPlace is DriverConfig.InPlace: true as scan-memory scans, false as the daemon does.
func oneBlock(c config, name, img, rulesDir string, inPlace bool) error {
	r, err := yara.Compile(rulesDir)
	if err != nil {
		return err
	}
	sc, err := r.NewMemoryScanner(0, 0)
	if err != nil {
		return err
	}
	defer sc.Close()
	src, err := memscan.Open("file:"+img, memscan.OpenOptions{})
	if err != nil {
		return err
	}
	defer src.Close()
	// libyara scans the driver's own mapping, so that both read the same pages through
	// the same page tables (a buffer from os.ReadFile would spare libyara the page
	// faults the driver's first pass takes).
	mf, ok := src.(*memscan.MappedFile)
	if !ok {
		return fmt.Errorf("%s: not a mapped file", img)
	}
	fi, err := os.Stat(img)
	if err != nil {
		return err
	}
	size := int(fi.Size())
	scanMapping := func() (err error) {
		if verr := mf.View(0, size, func(b []byte) { _, err = sc.Scan(b, 0) }); verr != nil {
			return verr
		}
		return err
	}
	rs := ruleSet{r}
	opts := memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}
	var ratios, aloneRatios, dv, av, yv []float64
	var screened, scanned int
	for range 3 {
		d := memscan.NewDriver(memscan.DriverConfig{Workers: 1, InPlace: inPlace})
		c0 := processCPU()
		p, err := d.Pass(context.Background(), src, opts)
		if err != nil {
			return err
		}
		dc := processCPU() - c0
		screened, scanned = p.BlocksScreened, p.BlocksScanned
		d = memscan.NewDriver(memscan.DriverConfig{Workers: 1, Batch: 1, InPlace: inPlace})
		c0 = processCPU()
		if _, err := d.Pass(context.Background(), src, opts); err != nil {
			return err
		}
		ac := processCPU() - c0
		c0 = processCPU()
		if err := scanMapping(); err != nil {
			return err
		}
		yc := processCPU() - c0
		dv, av, yv = append(dv, dc.Seconds()), append(av, ac.Seconds()), append(yv, yc.Seconds())
		ratios, aloneRatios = append(ratios, dc.Seconds()/yc.Seconds()), append(aloneRatios, ac.Seconds()/yc.Seconds())
	}
	fmt.Printf("in-process %-24s %s: driver first pass (1 worker) %.3f CPU-s (%d of %d windows settled by the screen), window by window %.3f, libyara one block %.3f CPU-s: %.3fx, window by window %.3fx (median of 3 triples)\n",
		name, human(int64(size)), medianF(dv), screened, scanned, medianF(av), medianF(yv), medianF(ratios), medianF(aloneRatios))
	return nil
}

// ruleSet adapts compiled rules to memscan.RuleSet as the daemon does (default block
// timeout and match cap).
type ruleSet struct{ r *yara.Rules }

func (s ruleSet) ID() string { return s.r.ID() }
func (s ruleSet) NewScanner() (memscan.BlockScanner, error) {
	return s.r.NewMemoryScanner(memscan.DefaultBlockTimeout, 0)
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scale runs the CLI pair once on a 4x larger bench image and prints growth.
func scale(c config, img, rulesFile string, planted []string, small *row) error {
	big := filepath.Join(c.dir, fmt.Sprintf("mem-%d.raw", 4*c.size))
	if !c.keep {
		defer os.Remove(big)
	}
	if _, err := makeImage(big, 4*c.size, rand.New(rand.NewPCG(42, 7)), planted, false); err != nil {
		return err
	}
	exec.Command("cat", big).Run()
	dm, err := runCmd([]string{c.domainm, "scan-memory", "--source", "file:" + big, "--rules", filepath.Dir(rulesFile), "--json", "--quiet"})
	if err != nil {
		return err
	}
	y, err := runCmd([]string{"yara", "-s", "-w", rulesFile, big})
	if err != nil {
		return err
	}
	sd, sy := small.dm[len(small.dm)-1], small.yara[len(small.yara)-1]
	fmt.Printf("\nscale %s -> %s (one run each at 4x; the smaller from the table's last pair):\n", human(c.size), human(4*c.size))
	fmt.Printf("%-10s %9s %9s %9s %14s\n", "tool", "CPU s", "wall s", "x CPU", "peak anon mem")
	fmt.Printf("%-10s %9.2f %9.2f %9s %10d KiB\n", "domainm", sd.cpu.Seconds(), sd.wall.Seconds(), "1.00", sd.peakAnon)
	fmt.Printf("%-10s %9.2f %9.2f %9.2f %10d KiB\n", "domainm 4x", dm.cpu.Seconds(), dm.wall.Seconds(), dm.cpu.Seconds()/sd.cpu.Seconds(), dm.peakAnon)
	fmt.Printf("%-10s %9.2f %9.2f %9s %10d KiB\n", "yara", sy.cpu.Seconds(), sy.wall.Seconds(), "1.00", sy.peakAnon)
	fmt.Printf("%-10s %9.2f %9.2f %9.2f %10d KiB\n", "yara 4x", y.cpu.Seconds(), y.wall.Seconds(), y.cpu.Seconds()/sy.cpu.Seconds(), y.peakAnon)
	fmt.Println("(peak anon: the process's own memory, RssAnon; the image's mapped pages are not counted)")
	_, err = driverPasses(c, "bench-4x", big, filepath.Dir(rulesFile))
	return err
}

// sealedMemfd copies the file at path into a memfd sealed against shrinking and
// growing, and returns its name for other processes (/proc/PID/fd/N) and a closer.
func sealedMemfd(path string) (string, func(), error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	fd, err := unix.MemfdCreate("domainm-bench", unix.MFD_ALLOW_SEALING)
	if err != nil {
		return "", nil, err
	}
	f := os.NewFile(uintptr(fd), "memfd")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "", nil, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		f.Close()
		return "", nil, err
	}
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd), func() { f.Close() }, nil
}

// head copies the first n bytes of src to dst.
func head(src, dst string, n int64) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b[:min(n, int64(len(b)))], 0o644)
}

// writeCheapRules writes 5 literal rules, two of them planted in the images.
func writeCheapRules(dir string, planted []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lits := []string{planted[0], planted[1], "Invoke-Mimikatz-cheap", "powershell -enc JABzAD0A", "xmrig-miner-config-v6"}
	var b strings.Builder
	for i, l := range lits {
		fmt.Fprintf(&b, "rule cheap_%d { strings: $a = %q condition: $a }\n", i, l)
	}
	return os.WriteFile(filepath.Join(dir, "cheap.yar"), []byte(b.String()), 0o644)
}

// hits maps rule name to the sorted set of match addresses.
type hits map[string][]uint64

func parseYara(out string) hits {
	h := hits{}
	var rule string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "0x") {
			off, _, _ := strings.Cut(line, ":")
			v, err := strconv.ParseUint(off[2:], 16, 64)
			if err == nil {
				h[rule] = append(h[rule], v)
			}
			continue
		}
		rule, _, _ = strings.Cut(line, " ")
		h[rule] = h[rule][:0:0]
	}
	for k := range h {
		sort.Slice(h[k], func(i, j int) bool { return h[k][i] < h[k][j] })
	}
	return h
}

func parseDomainm(out []byte) (hits, error) {
	h := hits{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		// scan-memory --json: rule.name, matches[].address as "0x..." (the alert schema's forms).
		var f struct {
			Rule struct {
				Name string `json:"name"`
			} `json:"rule"`
			Matches []struct {
				Address string `json:"address"`
			} `json:"matches"`
		}
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("decoding domainm output: %w", err)
		}
		for _, m := range f.Matches {
			a, err := strconv.ParseUint(strings.TrimPrefix(m.Address, "0x"), 16, 64)
			if err != nil {
				return nil, fmt.Errorf("decoding domainm output: address %q: %w", m.Address, err)
			}
			h[f.Rule.Name] = append(h[f.Rule.Name], a)
		}
	}
	for k := range h {
		sort.Slice(h[k], func(i, j int) bool { return h[k][i] < h[k][j] })
	}
	return h, nil
}

func compare(a, b hits) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d rules vs %d", len(a), len(b))
	}
	for r, as := range a {
		bs := b[r]
		if fmt.Sprint(dedup(as)) != fmt.Sprint(dedup(bs)) {
			return fmt.Sprintf("rule %s: yara %#x, domainm %#x", r, as, bs)
		}
	}
	return ""
}

// dedup: yara prints one line per string, so one address can appear for two strings.
func dedup(v []uint64) []uint64 {
	var out []uint64
	for i, x := range v {
		if i == 0 || x != v[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func countAddrs(h hits) int {
	n := 0
	for _, v := range h {
		n += len(dedup(v))
	}
	return n
}

func human(n int64) string { return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30)) }

// corpus collects real text and ELF bytes from this machine.
func corpus(roots []string, want func(b []byte) bool, limit int) []byte {
	var out []byte
	for _, root := range roots {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || len(out) >= limit {
				return filepath.SkipDir
			}
			if !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err == nil && len(b) > 0 && want(b) {
				out = append(out, b...)
			}
			return nil
		})
	}
	return out
}

func isELF(b []byte) bool { return len(b) > 4 && string(b[:4]) == "\x7fELF" }
func isText(b []byte) bool {
	return len(b) > 0 && !strings.ContainsRune(string(b[:min(len(b), 512)]), 0) && b[0] != 0x1f
}

// instructions counts, with callgrind, the instructions yara and domainm scan-memory (1
// worker, --attribute=false) execute on the first c.callgrind bytes of the dense image
// and on one page, with the cheap rules, the bench's rules and the public rules, and
// prints the ratio per byte
// ((image - one page) per tool, domainm over yara). Instruction counts do not move with
// the machine's load, unlike CPU time; they do not see memory stalls (a copy costs
// more time than its instructions say). Under callgrind a program runs ~50x slower, so
// domainm's run lengths, which follow its CPU time, would come out shorter than in a
// real run with the daemon's memory.run_budget; scan-memory's default (no bound, runs
// of DefaultBatch windows) does not depend on timing. Whether a worker screens its runs does
// (the rule engine's fixed cost per scan against a window's time, both in CPU time):
// valgrind slows condition evaluation more than string search, which moves that
// share (the bench's 128 rules: 0.7% natively, 2.6% under valgrind; the threshold is 5%).
func instructions(c config, dense, tiny string) error {
	if _, err := exec.LookPath("valgrind"); err != nil {
		return fmt.Errorf("-callgrind needs valgrind (Debian package valgrind): %w", err)
	}
	part := filepath.Join(c.dir, fmt.Sprintf("callgrind-%d.raw", c.callgrind))
	if err := head(dense, part, c.callgrind); err != nil {
		return err
	}
	defer os.Remove(part)
	sets := [][3]string{{"5 literal rules", filepath.Join(c.dir, "cheap"), filepath.Join(c.dir, "cheap", "cheap.yar")},
		{fmt.Sprintf("%d rules", c.nrules), filepath.Join(c.dir, "rules"), filepath.Join(c.dir, "rules", "bench.yar")}}
	if files, _ := filepath.Glob(filepath.Join(c.public, "*.yar")); len(files) > 0 {
		sets = append(sets, [3]string{"public rules", c.public, ""})
	}
	fmt.Printf("\ninstructions (callgrind), %d MiB of the dense image, 1 worker:\n", c.callgrind>>20)
	for _, set := range sets {
		yaraArgs := []string{"yara", "-s", "-w", set[2]}
		if set[2] == "" {
			files, _ := filepath.Glob(filepath.Join(set[1], "*.yar"))
			yaraArgs = append([]string{"yara", "-s", "-w"}, files...)
		}
		var n [4]int64
		for i, img := range []string{part, tiny} {
			var err error
			if n[2*i], err = callgrind(c, append(append([]string(nil), yaraArgs...), img)); err != nil {
				return err
			}
			dm := append([]string{c.domainm, "scan-memory", "--source", "file:" + img, "--rules", set[1], "--json", "--quiet", "--workers", "1"}, scanOnly...)
			if n[2*i+1], err = callgrind(c, dm); err != nil {
				return err
			}
		}
		fmt.Printf("  %-16s yara %6.0f M (one page %5.0f M), domainm %6.0f M (one page %5.0f M): per byte %.3fx\n", set[0],
			float64(n[0])/1e6, float64(n[2])/1e6, float64(n[1])/1e6, float64(n[3])/1e6, float64(n[1]-n[3])/float64(n[0]-n[2]))
	}
	return nil
}

// callgrind runs args under valgrind's callgrind and returns the instructions counted.
// Go's asynchronous preemption signals trip callgrind 3.19, so they are off for the run.
// The garbage collector is off (GOGC=off; domainm peaks at about 250 MB with elastic's
// rules): its cycles are started by the rule compiler's garbage, not by the scan (a
// window allocates little), and under valgrind, which runs one thread at a time, their
// work lands anywhere: a concurrent cycle marked inside the image's run or after the
// one-page run had exited (up to 1.5% of the per-byte figure), and with the world
// stopped (gcstoptheworld=1, used before) the background sweeper spun in its yield loop
// while the compiler ran in C, 3.7-4.2 G instructions in 2 of 4 one-page runs with
// elastic's rules (a negative per-byte figure). Without collection both runs repeat to
// within 0.2%.
func callgrind(c config, args []string) (int64, error) {
	out := filepath.Join(c.dir, "callgrind.out")
	defer os.Remove(out)
	cmd := exec.Command("valgrind", append([]string{"--tool=callgrind", "--callgrind-out-file=" + out}, args...)...)
	cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1", "GOGC=off")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 1) {
		return 0, fmt.Errorf("valgrind %s: %w\n%s", args[0], err, errb.String())
	}
	for _, l := range strings.Split(errb.String(), "\n") {
		if _, v, ok := strings.Cut(l, "Collected :"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("valgrind %s: no instruction count in its output", args[0])
}
