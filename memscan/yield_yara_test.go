package memscan_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// cheapMemory is 64 MiB of random bytes in a memfd (sealed against shrinking: scanned in
// place; or not: copied) and 5 literal rules, the dense memory and cheap rules where the
// Go runtime's share of a scan shows most.
func cheapMemory(t *testing.T, sealed bool) (*memscan.MappedFile, yara.MemoryRules) {
	t.Helper()
	dir := t.TempDir()
	src := ""
	for i := range 5 {
		src += fmt.Sprintf("rule lit%d { strings: $a = \"DOMAINM-LITERAL-%d-%x\" condition: $a }\n", i, i, i*7919)
	}
	if err := os.WriteFile(filepath.Join(dir, "cheap.yar"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := yara.Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	flags := unix.MFD_CLOEXEC
	if sealed {
		flags |= unix.MFD_ALLOW_SEALING
	}
	fd, err := unix.MemfdCreate("domainm-yield", flags)
	if err != nil {
		t.Fatal(err)
	}
	mf := os.NewFile(uintptr(fd), "memfd")
	t.Cleanup(func() { mf.Close() })
	img := make([]byte, 64<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	// Each literal planted twice: somewhere in a block and across a block's end.
	for i := range 5 {
		lit := fmt.Sprintf("DOMAINM-LITERAL-%d-%x", i, i*7919)
		copy(img[rng.IntN(len(img)-64):], lit)
		copy(img[(1+rng.IntN(255))*memscan.DefaultBlockSize-5:], lit)
	}
	if _, err := mf.Write(img); err != nil {
		t.Fatal(err)
	}
	if sealed {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK); err != nil {
			t.Fatal(err)
		}
	}
	mem, err := memscan.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), memscan.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	if mem.InPlace() != sealed {
		t.Fatalf("in place %v, want %v", mem.InPlace(), sealed)
	}
	return mem, yara.MemoryRules{Rules: r}
}

// A scan is mostly libyara calls. Go's sysmon takes the P of a goroutine found in a cgo
// call after 10 ms without a pass through the scheduler, and then polls every 20 us for
// a millisecond or more: before the workers yielded between calls, a pass over dense
// memory with cheap rules switched threads 0.55-1.6 times per window (yara: 5 times in
// a whole scan of 256 MiB); since, 0.03-0.2 on a quiet machine. It goes back up if a
// worker stops yielding, or if a call holds a whole run of windows again.
func TestScanSwitchesThreadsRarely(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		mem, rules := cheapMemory(t, sealed)
		for _, workers := range []int{1, 2} {
			t.Run(fmt.Sprintf("in-place=%v/workers=%d", sealed, workers), func(t *testing.T) {
				// Sysmon's clock is the wall clock: a worker descheduled in a call (a busy
				// machine: go test runs packages side by side) is retaken whatever it does,
				// and a busy machine's passes switch more. So the question is whether a
				// pass can do with few switches: up to 20 passes are made until one does.
				// The old code never did (140-278 for 256 windows on a quiet machine, the
				// fewest); the new one does on a quiet machine at once (6-48), and under
				// load within a few passes (the fewest of 20: 11-48 with two other test
				// packages running).
				var all []int64
				windows := 0
				for range 20 {
					d := memscan.NewDriver(memscan.DriverConfig{Workers: workers, RunBudget: -1, InPlace: true}) // scan-memory's runs
					var a, b unix.Rusage
					unix.Getrusage(unix.RUSAGE_SELF, &a)
					res, err := d.Pass(context.Background(), mem, memscan.PassOptions{Rules: func() memscan.RuleSet { return rules }})
					unix.Getrusage(unix.RUSAGE_SELF, &b)
					if err != nil || len(res.Errors) > 0 || res.BlocksScanned == 0 {
						t.Fatal(err, res.Errors, res.BlocksScanned)
					}
					windows = res.BlocksScanned
					if all = append(all, b.Nvcsw-a.Nvcsw); all[len(all)-1] <= int64(windows)/2 {
						break
					}
				}
				t.Logf("%d windows: voluntary thread switches per pass %v", windows, all)
				if m := slices.Min(all); m > int64(windows)/2 {
					t.Errorf("%d voluntary thread switches for %d windows in the best of %d passes, want at most one per 2 windows", m, windows, len(all))
				}
			})
		}
	}
}

// eachTimed records the thread CPU time of each ScanEach call of a real scanner.
type eachTimed struct {
	yara.MemoryRules
	mu    sync.Mutex
	calls []time.Duration
	wins  []int
}

type eachTimedScanner struct {
	*yara.MemoryScanner
	rec *eachTimed
}

func (e *eachTimed) NewScanner() (memscan.BlockScanner, error) {
	sc, err := e.MemoryRules.NewScanner()
	if err != nil {
		return nil, err
	}
	return eachTimedScanner{sc.(*yara.MemoryScanner), e}, nil
}

func (s eachTimedScanner) ScanEach(buf []byte, offs, lens []int, bases []uint64) ([][]detectors.Match, []error) {
	var a, b unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &a)
	outs, errs := s.MemoryScanner.ScanEach(buf, offs, lens, bases)
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &b)
	s.rec.mu.Lock()
	s.rec.calls = append(s.rec.calls, time.Duration(b.Nano()-a.Nano()))
	s.rec.wins = append(s.rec.wins, len(offs))
	s.rec.mu.Unlock()
	return outs, errs
}

// A run scanned in place is one extent, but its windows go to libyara in calls sized to
// take about CallBudget each (the first, before the rate is known, aside), so that a
// call does not run into sysmon's 10 ms; and the scan finds what it finds window by
// window.
func TestScanEachCallsKeepToBudget(t *testing.T) {
	mem, rules := cheapMemory(t, true)
	rec := &eachTimed{MemoryRules: rules}
	d := memscan.NewDriver(memscan.DriverConfig{Workers: 1, RunBudget: -1, InPlace: true}) // scan-memory
	res, err := d.Pass(context.Background(), mem, memscan.PassOptions{Rules: func() memscan.RuleSet { return rec }})
	if err != nil || len(res.Errors) > 0 {
		t.Fatal(err, res.Errors)
	}
	if res.BytesInPlace == 0 || len(rec.calls) < 2 {
		t.Fatalf("%d bytes in place, %d ScanEach calls: the run was not scanned in place in calls", res.BytesInPlace, len(rec.calls))
	}
	t.Logf("%d calls, windows per call %v, CPU %v", len(rec.calls), rec.wins, rec.calls)
	// The median call after the first: calls are sized at the least time per byte seen,
	// so a typical one takes somewhat more than CallBudget.
	later := slices.Clone(rec.calls[1:])
	slices.Sort(later)
	if med := later[len(later)/2]; med > 2*memscan.CallBudget {
		t.Errorf("the median ScanEach call took %v, want at most 2x CallBudget (%v)", med, memscan.CallBudget)
	}
	alone := memscan.NewDriver(memscan.DriverConfig{Workers: 1, Batch: 1})
	want, err := alone.Pass(context.Background(), mem, memscan.PassOptions{Rules: func() memscan.RuleSet { return aloneOf{rules} }})
	if err != nil || want.BlocksScanned != res.BlocksScanned {
		t.Fatal(err, want.BlocksScanned, res.BlocksScanned)
	}
	if len(res.Matches) != 5 || fmt.Sprint(want.Matches) != fmt.Sprint(res.Matches) {
		t.Errorf("in calls: %v\nwindow by window: %v", res.Matches, want.Matches)
	}
}
