package memscan_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// TestCancelledPassReturnsSoon asks the operator's question about prepare (DESIGN:
// "prepare: finish the current block"): once the supervisor cancels a pass, how much is
// still done before Pass returns? With the real YARA engine, a rule set whose fixed cost
// per libyara call matters (2,000 literal rules, like elastic's public set) and 64 MiB
// of dense random memory in a memfd, 2 workers, each pass is cancelled somewhere between
// 8 and 32 MiB (runs of Batch windows are 8 MiB: those handed out by a cancel at 32 MiB
// end before the image does). A run holds about DefaultRunBudget of expected work in the
// workers' CPU time, so what is asserted is in CPU terms, which a loaded machine does
// not stretch as it stretches wall time: the runs in flight at the cancel, against the CPU time one
// window takes alone (measured in the same trial), and the CPU time spent after the
// cancel. The wall time from cancel to return is logged. The same trials with runs of
// Batch windows whatever they cost (RunBudget < 0, the driver of e19b72a) must hold
// DefaultBatch windows and spend more CPU after the cancel, or the test would not tell the two
// apart. DOMAINM_CANCEL_RULES=DIR takes the rules from DIR instead.
func TestCancelledPassReturnsSoon(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(15, 5))
	var src strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&src, "rule r%d { strings: $a = { %02x %02x %02x %02x %02x %02x %02x %02x } condition: $a }\n", i,
			rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256))
	}
	if err := os.WriteFile(filepath.Join(dir, "many.yar"), []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if d := os.Getenv("DOMAINM_CANCEL_RULES"); d != "" {
		dir = d // another rule set, say elastic's (../shared/corpora), for a measurement
	}
	r, err := yara.Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	rules := yara.MemoryRules{Rules: r}

	const size = 64 << 20
	fd, err := unix.MemfdCreate("domainm-cancel", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	mf := os.NewFile(uintptr(fd), "memfd")
	defer mf.Close()
	img := make([]byte, size)
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	if _, err := mf.Write(img); err != nil {
		t.Fatal(err)
	}
	img = nil
	mem, err := memscan.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), memscan.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()

	// oneWindow is the median wall and CPU time of a window of the default size
	// scanned alone.
	sc, err := rules.NewScanner()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	win := make([]byte, memscan.DefaultBlockSize+memscan.DefaultOverlap)
	oneWindow := func(at int64) (wall, cpu time.Duration) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var ds, cs []time.Duration
		for i := range 5 {
			gpa := at + int64(i)*memscan.DefaultBlockSize
			if _, err := mem.ReadAt(win, gpa); err != nil {
				t.Fatal(err)
			}
			t0, c0 := time.Now(), threadCPU()
			if _, err := sc.Scan(win, uint64(gpa)); err != nil {
				t.Fatal(err)
			}
			ds, cs = append(ds, time.Since(t0)), append(cs, threadCPU()-c0)
		}
		slices.Sort(ds)
		slices.Sort(cs)
		return ds[len(ds)/2], cs[len(cs)/2]
	}

	// cancelAt runs a pass with d, cancels it once at bytes are done and returns the
	// time and the process's CPU time from the cancel to Pass's return, and the longest
	// run in flight at the cancel: of the last runs handed out before it (one per
	// worker) and any handed out after.
	type cancelled struct {
		wall, cpu time.Duration
		run       int
	}
	cancelAt := func(d *memscan.Driver, at uint64) cancelled {
		d.Forget()
		runtime.GC() // no collection of the test's own garbage in the CPU time after the cancel
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		var runs []int
		before := -1 // runs handed out before the cancel
		memscan.OnRun(d, func(n int) {
			mu.Lock()
			runs = append(runs, n)
			mu.Unlock()
		})
		defer memscan.OnRun(d, nil)
		var t0 time.Time
		var c0 time.Duration
		res, err := d.Pass(ctx, mem, memscan.PassOptions{
			Rules: func() memscan.RuleSet { return rules },
			Progress: func(done, total uint64) {
				if done >= at && t0.IsZero() {
					mu.Lock()
					before = len(runs)
					mu.Unlock()
					t0, c0 = time.Now(), processCPU()
					cancel()
				}
			},
		})
		c := cancelled{wall: time.Since(t0), cpu: processCPU() - c0}
		if err != nil || len(res.Errors) > 0 {
			t.Fatal(err, res.Errors)
		}
		if res.Complete || res.Cursor < at || res.Cursor >= size {
			t.Fatalf("pass cancelled at %d MiB: complete %v, cursor %#x", at>>20, res.Complete, res.Cursor)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, n := range runs[max(before-d.Config().Workers, 0):] {
			c.run = max(c.run, n)
		}
		return c
	}

	timed := memscan.NewDriver(memscan.DriverConfig{Workers: 2})
	whole := memscan.NewDriver(memscan.DriverConfig{Workers: 2, RunBudget: -1})
	const trials = 7
	var wins, cpus []time.Duration
	var got, gotWhole []cancelled
	for i := range trials {
		at := uint64(8<<20 + i*(24<<20)/(trials-1))
		w, c := oneWindow(int64(at))
		wins, cpus = append(wins, w), append(cpus, c)
		got = append(got, cancelAt(timed, at))
		gotWhole = append(gotWhole, cancelAt(whole, at+memscan.DefaultBlockSize*3))
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	of := func(cs []cancelled, f func(cancelled) time.Duration) (ds []time.Duration) {
		for _, c := range cs {
			ds = append(ds, f(c))
		}
		return ds
	}
	wallOf := func(c cancelled) time.Duration { return c.wall }
	cpuOf := func(c cancelled) time.Duration { return c.cpu }
	runsOf := func(cs []cancelled) (ns []int) {
		for _, c := range cs {
			ns = append(ns, c.run)
		}
		return ns
	}
	medRun := func(cs []cancelled) int {
		ns := runsOf(cs)
		slices.Sort(ns)
		return ns[len(ns)/2]
	}
	w, c := med(wins), med(cpus)
	l, lw := med(of(got, wallOf)), med(of(gotWhole, wallOf))
	lc, lcw := med(of(got, cpuOf)), med(of(gotWhole, cpuOf))
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("one window alone %v wall, %v CPU (median of %v); cancel to return, runs of RunBudget: %v wall, %v CPU, runs in flight %v windows (medians; runs %v); runs of %d windows: %v wall, %v CPU (medians); load %s",
		w, c, wins, l, lc, medRun(got), runsOf(got), memscan.DefaultBatch, lw, lcw, strings.TrimSpace(string(load)))
	// Run lengths are decisions on the workers' CPU time, so they are asserted, not the
	// wall time a loaded machine stretches (logged above). A run holds about
	// DefaultRunBudget of CPU time by the worker's estimate, which a screened window
	// lowers (a screened window costs less than one alone: up to about half as much
	// with this rule set), and at least one window.
	maxRun := int(2*float64(memscan.DefaultRunBudget)/float64(c)) + 1
	for i, g := range got {
		if g.run > maxRun && maxRun < memscan.DefaultBatch {
			t.Errorf("trial %d: a run of %d windows was in flight at the cancel; a window alone takes %v CPU, so a run of %v should hold at most %d",
				i, g.run, c, memscan.DefaultRunBudget, maxRun)
		}
	}
	// What the cancel then waits for is the runs in flight, one per worker: the CPU
	// time spent after the cancel (both workers) is at most a run's each, the budget
	// and three windows (an estimate that lags, a window of the screen scanned alone, the
	// pass's own work around the runs). Measured at load 8-10: a median of 11-16 ms
	// against this bound of about 29 ms, and 24-37 ms with runs of 16.
	if bound := time.Duration(2 * (float64(memscan.DefaultRunBudget) + 3*float64(c))); lc > bound {
		t.Errorf("a cancelled pass used %v of CPU (median) after the cancel, want at most %v (a window alone takes %v CPU)", lc, bound, c)
	}
	// The test tells runs bounded by time from runs of Batch windows, which hold
	// DefaultBatch windows whatever they cost: more CPU after the cancel.
	if medRun(gotWhole) != memscan.DefaultBatch || lcw <= lc {
		t.Errorf("runs of %d windows: %v windows in flight, %v CPU after the cancel; runs of RunBudget %v CPU: the test does not tell them apart (a window alone %v CPU)",
			memscan.DefaultBatch, medRun(gotWhole), lcw, lc, c)
	}
}

// processCPU is the CPU time of the whole process (all threads).
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// threadCPU is the CPU time the calling thread has used.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}
