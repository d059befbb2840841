package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

func init() {
	register(command{name: "rules check", summary: "compile a rules folder and report every error with file:line", run: runRulesCheck,
		exits: []exit{
			{ExitClean, "every file compiles (warnings and window notes allowed)"},
			{ExitError, "a file does not compile, or DIR cannot be read"},
		},
		examples: []string{
			"domainm rules check /etc/domainm/rules",
			"domainm rules check /etc/domainm/rules --profile --top 5 --sample /var/tmp/web-1.ram",
		}})
}

func runRulesCheck(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "rules check", "rules check DIR",
		`Compiles every *.yar and *.yara file under DIR (subfolders too; each file is its own
namespace, named by its path without extension; a file included by another is compiled
only as part of its includer) with the same libyara and external variables the appliance
uses, and prints:
  FILE:LINE: error: ...    a file that does not compile. domainm run (at start and at
                           reload) leaves it out and loads the rest of the folder; a file
                           that was loaded before keeps running in its last good version.
                           Each broken file is alerted once (rule-error, FILE:LINE) and
                           is a rules problem in domainm status until fixed or removed
  FILE:LINE: warning: ...  libyara's warnings, such as a string that slows scanning down
  FILE:LINE: window: ...   a rule whose meaning in a memory scan depends on the scan
                           window: filesize (undefined in memory), a fixed offset or
                           uint16(N) (a guest-physical address in memory), counts (per
                           window), file-format modules (parse a header at a window start)
With --profile, each file's rules are also compiled and timed on their own over a
256 KiB memory window (--sample FILE: its first 256 KiB; default: pseudo-random bytes
and text), and the most expensive files are printed with their time per window:
  FILE: cost: 41.2ms per window (63% of the set), 12 rules
libyara 4.2.3 as packaged has no per-rule profiling; a file is the finest unit measured.`)
	profile := fs.Bool("profile", false, "time each rule file over a sample window and print the most expensive")
	sampleFile := fs.String("sample", "", "sample `FILE` for --profile (first 256 KiB; default: generated)")
	top := fs.Int("top", 10, "`N` files to print with --profile")
	dir, err := rulesFolderArgs(env, fs, args)
	if err != nil {
		return ExitUsage, err
	}
	r, ce, err := compileFolder(dir, env.Stdout)
	if errors.Is(err, yara.ErrNoRules) {
		fmt.Fprintf(env.Stdout, "%s: no rule files (*.yar, *.yara)\n", dir)
		return ExitClean, nil
	} else if err != nil {
		return ExitError, err
	}
	printRuleNotes(env.Stdout, dir, r)
	if *profile {
		if err := printProfile(env.Stdout, dir, r, *sampleFile, *top); err != nil {
			return ExitError, err
		}
	}
	if ce != nil {
		fmt.Fprintf(env.Stdout, "%s: %d rules in %d files load; %d file(s) left out\n", dir, r.Count(), len(r.Files()), len(ce.Left))
		return ExitError, fmt.Errorf("%d error(s) in %s", len(ce.Errors), dir)
	}
	fmt.Fprintf(env.Stdout, "%s: %d rules in %d files OK\n", dir, r.Count(), len(r.Files()))
	return ExitClean, nil
}

// printRuleNotes prints the compiler's warnings (slow strings among them) and the rules
// whose meaning depends on the memory scan window, each as FILE:LINE.
func printRuleNotes(w io.Writer, dir string, r *yara.Rules) {
	for _, x := range r.Warnings() {
		fmt.Fprintf(w, "%s: warning: %s\n", joinPath(dir, x.File, x.Line), x.Text)
	}
	for _, x := range r.WindowRules() {
		fmt.Fprintf(w, "%s: window: rule %s depends on the memory scan window: %s\n", joinPath(dir, x.File, x.Line), x.Rule, strings.Join(x.Reasons, ", "))
	}
	if n := len(r.WindowRules()); n > 0 {
		fmt.Fprintf(w, "%s: %d of %d rules depend on the memory scan window (see README, Writing rules for memory scans)\n", dir, n, r.Count())
	}
}

func joinPath(dir, file string, line int) string {
	p := dir + "/" + file
	if line > 0 {
		return fmt.Sprintf("%s:%d", p, line)
	}
	return p
}

// printProfile times each rule file over a sample window (see rules check --help).
func printProfile(w io.Writer, dir string, r *yara.Rules, sampleFile string, top int) error {
	sample := make([]byte, memscan.DefaultBlockSize)
	if sampleFile != "" {
		f, err := os.Open(sampleFile)
		if err != nil {
			return err
		}
		n, err := io.ReadFull(f, sample)
		f.Close()
		if err != nil && n == 0 {
			return fmt.Errorf("reading sample: %w", err)
		}
		sample = sample[:n]
	} else {
		// Half pseudo-random bytes, half text: what most of a guest's memory looks like to
		// a rule, and deterministic so that two runs compare.
		x := uint32(2463534242)
		for i := range sample {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			sample[i] = byte(x)
		}
		text := []byte("GET /index.html HTTP/1.1\r\nHost: example.org\r\nUser-Agent: Mozilla/5.0\r\n/usr/bin/env bash -c 'echo hello'; PATH=/usr/local/bin:/usr/bin LD_LIBRARY_PATH=/lib64 kernel: [ 0.000000] Linux version\n")
		for i := len(sample) / 2; i < len(sample); i += len(text) {
			copy(sample[i:], text)
		}
	}
	costs, err := r.Profile(sample, 1<<32, memscan.DefaultBlockTimeout)
	if err != nil {
		return err
	}
	var total time.Duration
	for _, c := range costs {
		total += c.Time
	}
	for i, c := range costs {
		if i == top {
			break
		}
		share := 0.0
		if total > 0 {
			share = 100 * float64(c.Time) / float64(total)
		}
		fmt.Fprintf(w, "%s: cost: %v per %d KiB window (%.0f%% of the set), %d rules", joinPath(dir, c.File, 0), c.Time.Round(10*time.Microsecond), len(sample)>>10, share, c.Rules)
		if c.Err != nil {
			fmt.Fprintf(w, "; %v", c.Err)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%s: %v per window for all %d files, each on its own\n", dir, total.Round(10*time.Microsecond), len(costs))
	return nil
}
