// Command bench compares `domainm scan-memory` with the yara CLI on a realistic guest
// memory image, in the same run, and prints a table (make bench-memscan).
//
// The image (default 1 GiB) is built page by page in runs that imitate a booted guest:
// zero pages (free memory), random pages (compressed or encrypted data, page cache of
// binaries with high entropy), text pages (documentation and configuration files from
// this machine) and ELF pages (executables and libraries from this machine). The rule set
// (default 128 rules) mixes text, wide, nocase, hex-with-jumps and regular-expression
// strings; a known number of rules are planted so that both tools must report them.
package main

import (
	"bufio"
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
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/engine"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

func main() {
	size := flag.Int64("size", 1<<30, "image size in bytes")
	nrules := flag.Int("rules", 128, "number of rules")
	dir := flag.String("dir", "/dev/shm/domainm-bench", "work folder (image and rules)")
	domainm := flag.String("domainm", "bin/domainm", "domainm binary")
	keep := flag.Bool("keep", false, "keep the image for the next run")
	flag.IntVar(&reps, "reps", 3, "runs of each CLI (best is reported)")
	flag.Parse()
	if err := run(*size, *nrules, *dir, *domainm, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var reps int

func run(size int64, nrules int, dir, domainm string, keep bool) error {
	if err := os.MkdirAll(filepath.Join(dir, "rules"), 0o755); err != nil {
		return err
	}
	img := filepath.Join(dir, fmt.Sprintf("mem-%d.raw", size))
	if !keep {
		defer os.Remove(img)
	}
	rng := rand.New(rand.NewPCG(42, 7))
	rules, planted := makeRules(rng, nrules)
	rulesFile := filepath.Join(dir, "rules", "bench.yar")
	if err := os.WriteFile(rulesFile, []byte(rules), 0o644); err != nil {
		return err
	}
	mix, err := makeImage(img, size, rng, planted)
	if err != nil {
		return err
	}
	fmt.Printf("image %s: %s, %s\n", img, human(size), mix)
	fmt.Printf("rules: %d (%d planted in the image), %d CPUs\n\n", nrules, len(planted), runtime.NumCPU())

	// Fault the image into memory once so neither tool pays for it.
	if _, err := exec.Command("cat", img).Output(); err != nil {
		return err
	}
	// yara CLI and domainm CLI, alternating, best of reps each: one full scan as a user
	// runs it (compile, map, scan).
	var tYara, tCLI time.Duration
	var yaraOut, cliOut []byte
	for range reps {
		t0 := time.Now()
		out, err := exec.Command("yara", "-s", "-w", rulesFile, img).Output()
		if err != nil {
			return fmt.Errorf("yara: %w", err)
		}
		tYara, yaraOut = best(tYara, time.Since(t0)), out
		t0 = time.Now()
		out, err = exec.Command(domainm, "scan-memory", "--source", "file:"+img, "--rules", filepath.Dir(rulesFile), "--json", "--quiet").Output()
		if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 1) {
			return fmt.Errorf("domainm: %w", err)
		}
		tCLI, cliOut = best(tCLI, time.Since(t0)), out
	}
	yaraHits := parseYara(string(yaraOut))
	cliHits, err := parseDomainm(cliOut)
	if err != nil {
		return err
	}

	// The driver in-process: first and second pass over unchanged memory.
	r, err := yara.Compile(filepath.Dir(rulesFile))
	if err != nil {
		return err
	}
	src, err := memscan.Open("file:"+img, memscan.OpenOptions{})
	if err != nil {
		return err
	}
	defer src.Close()
	d := memscan.NewDriver(memscan.DriverConfig{})
	rs := engine.MemoryRules{Rules: r}
	opts := memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}
	t0 := time.Now()
	p1, err := d.Pass(context.Background(), src, opts)
	if err != nil {
		return err
	}
	tP1 := time.Since(t0)
	t0 = time.Now()
	p2, err := d.Pass(context.Background(), src, opts)
	if err != nil {
		return err
	}
	tP2 := time.Since(t0)

	gbs := func(d time.Duration) float64 { return float64(size) / 1e9 / d.Seconds() }
	fmt.Printf("%-40s %9s %9s %8s %s\n", "run", "seconds", "GB/s", "vs yara", "rules matched")
	row := func(name string, d time.Duration, hits int) {
		fmt.Printf("%-40s %9.3f %9.3f %7.1fx %d\n", name, d.Seconds(), gbs(d), tYara.Seconds()/d.Seconds(), hits)
	}
	fmt.Printf("(CLI rows: best of %d runs each, alternating)\n", reps)
	row("yara -s (CLI, 1 thread)", tYara, len(yaraHits))
	row("domainm scan-memory (CLI, full pass)", tCLI, len(cliHits))
	row(fmt.Sprintf("driver pass 1 (%d workers)", d.Config().Workers), tP1, len(p1.Matches))
	row("driver pass 2 (memory unchanged)", tP2, len(p2.Matches))
	fmt.Printf("\npass 1: %d blocks, %d zero (skipped), %d scanned; pass 2: %d unchanged, %d scanned\n",
		p1.Blocks, p1.BlocksZero, p1.BlocksScanned, p2.BlocksUnchanged, p2.BlocksScanned)

	// Same answers: every (rule, address) yara reports, domainm reports, and vice versa.
	if diff := compare(yaraHits, cliHits); diff != "" {
		return fmt.Errorf("domainm and yara disagree: %s", diff)
	}
	fmt.Printf("findings identical: %d rules, %d addresses\n", len(yaraHits), countAddrs(yaraHits))
	fmt.Printf("goal full pass >= 2x yara: %v (%.1fx); second pass >= 10x: %v (%.1fx)\n",
		tYara >= 2*tCLI, tYara.Seconds()/tCLI.Seconds(), tYara >= 10*tP2, tYara.Seconds()/tP2.Seconds())
	return nil
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
		var f struct {
			Rule    string `json:"rule"`
			Matches []struct {
				Offset uint64 `json:"offset"`
			} `json:"matches"`
		}
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("decoding domainm output: %w", err)
		}
		for _, m := range f.Matches {
			h[f.Rule] = append(h[f.Rule], m.Offset)
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

func best(cur, d time.Duration) time.Duration {
	if cur == 0 || d < cur {
		return d
	}
	return cur
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
