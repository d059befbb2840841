package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"

	"github.com/domainm/domainm/detectors/filescan"
	"github.com/domainm/domainm/diskscan"
)

// Helpers shared by the disk commands (baseline, check, scan-disk).

// diskFlags are the options every disk command has.
type diskFlags struct {
	image     string
	partition int
	workers   int
	format    string
	json      bool
	quiet     bool
}

func (d *diskFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.image, "image", "", "disk `IMG` of the target (raw or qcow2; read-only, never mounted)")
	fs.IntVar(&d.partition, "partition", -1, "partition `N` as Linux numbers them (-1: the first with a supported filesystem)")
	fs.StringVar(&d.format, "format", "", "image `FORMAT`: raw or qcow2 (default: probe; see the note on probing)")
	fs.IntVar(&d.workers, "workers", runtime.NumCPU(), "`N` files read and hashed or scanned in parallel")
	fs.BoolVar(&d.json, "json", false, "print the report as JSON")
	fs.BoolVar(&d.quiet, "quiet", false, "no progress bar (there is none when stderr is not a terminal)")
}

func (d *diskFlags) check() error {
	if d.image == "" {
		return fmt.Errorf("--image is required (see --help)")
	}
	if d.format != "" && d.format != "raw" && d.format != "qcow2" {
		return fmt.Errorf("--format must be raw or qcow2")
	}
	if d.workers < 1 {
		return fmt.Errorf("--workers must be at least 1")
	}
	return nil
}

// diskPathError is a path that could not be read, in JSON reports.
type diskPathError = filescan.PathError

// warnJournal prints, when the filesystem's journal is not applied as the guest's kernel
// would apply it (diskscan.JournalError: the kernel would refuse it, or it is external),
// one warning line: what was read may not be what the guest's kernel reads.
func warnJournal(w io.Writer, image string, fsys diskscan.FS) {
	if err := diskscan.JournalError(fsys); err != nil {
		fmt.Fprintf(w, "warning: %s: %s\n", diskSafe(image), diskSafe(err.Error()))
	}
}

// diskProgress shows a progress bar on stderr while a disk command runs, when stderr
// is a terminal; it is silent otherwise. total is the expected number of bytes (0 when
// unknown: a spinner). The returned function stops it.
func diskProgress(env Env, quiet bool, desc string, total int64, files, bytes *atomic.Int64) func() {
	if quiet || !env.isTerminal(env.Stderr) {
		return func() {}
	}
	max := total
	if max <= 0 {
		max = -1
	}
	bar := progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(env.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSpinnerType(14),
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				bar.Finish()
				return
			case <-t.C:
				b := bytes.Load()
				if max > 0 && b > max {
					max = b
					bar.ChangeMax64(max)
				}
				bar.Describe(fmt.Sprintf("%s %d files", desc, files.Load()))
				bar.Set64(b)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// diskSafe renders guest-controlled text (paths, link targets, errors naming them) for a
// text report: as is when printable, Go-quoted otherwise, so that a file name can
// neither forge report lines nor send terminal escape sequences.
func diskSafe(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// diskMBps is bytes per second in MB/s (10^6), for reports.
func diskMBps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / d.Seconds()
}
