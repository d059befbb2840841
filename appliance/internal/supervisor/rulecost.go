package supervisor

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors/yara"
)

// maxProfileTimeout bounds one probe scan of one rule file, whatever memory.yara_timeout
// says: profiling runs three scans per file on the rules goroutine.
const maxProfileTimeout = 10 * time.Second

// probeWindow is what rule files are timed on: a window of the daemon's size (block plus
// overlap) of fixed pseudo-random bytes. Real memory is partly text and zeros, so a
// string rule may cost a little more or less there; loops and regular expressions cost
// what they cost.
func (h *ruleHolder) probeWindow() []byte {
	n := int(h.s.cfg.Memory.BlockSize + h.s.cfg.Memory.Overlap)
	if n <= 0 {
		n = 256 << 10
	}
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{'d', 'o', 'm', 'a', 'i', 'n', 'm'})
	r.Read(b)
	return b
}

// profile times each rule file of a set just loaded over one probe window, publishes the
// costs (domainm_rule_file_window_seconds), times the whole set over it as a pass runs
// it (screened runs included), and alerts rules-slow when the pass the new
// set starts with (every non-zero window is scanned again after a reload) would take
// longer than memory.interval. Called on the rules goroutine, off the scan path.
func (h *ruleHolder) profile(r *yara.Rules) {
	if r.Count() == 0 {
		return
	}
	start := time.Now()
	probe := h.probeWindow()
	costs, err := r.Profile(probe, 0, min(h.s.cfg.Memory.YaraTimeout, maxProfileTimeout))
	if err != nil {
		h.s.log.Warn("rule files not profiled", "err", err)
		return
	}
	h.s.m.ruleFileSeconds.Reset()
	var perWindow time.Duration
	for _, c := range costs {
		h.s.m.ruleFileSeconds.WithLabelValues(c.File).Set(c.Time.Seconds())
		perWindow += c.Time
	}
	// The pass is estimated from the whole set as the memory driver runs it: one scan
	// per window for all files (the sum over files pays libyara's fixed cost once per
	// file), and, for a set the driver screens, runs of windows in one scan
	// (yara.WindowCost). Where the whole set stops at the time limit, the files' sum.
	if wc, err := r.WindowCost(probe, 0, min(h.s.cfg.Memory.YaraTimeout, maxProfileTimeout)); err == nil {
		perWindow = wc.Pass
	}
	windows := h.s.mem.windows()
	workers := max(1, h.s.cfg.Memory.Workers)
	est := perWindow * time.Duration(windows) / time.Duration(workers)
	h.s.log.Info("rule files profiled", "files", len(costs), "per_window", perWindow, "windows", windows,
		"estimated_pass", est, "took", time.Since(start))
	if windows == 0 || est <= h.s.memInterval() {
		return
	}
	var top []string
	for _, c := range costs[:min(3, len(costs))] {
		s := fmt.Sprintf("%s (%v per window)", c.File, c.Time.Round(time.Millisecond))
		if c.Err != nil {
			s = fmt.Sprintf("%s (stopped after %v: %v)", c.File, c.Time.Round(time.Millisecond), c.Err)
		}
		top = append(top, s)
	}
	h.s.emit(alert.Health(h.s.clk.Now(), alert.SevMedium, "rules", "slow",
		fmt.Sprintf("rules loaded from %s cost %v per %d-byte window: the next memory pass over %d windows with %d workers will take about %v, more than memory.interval %v; most expensive: %s",
			h.dir, perWindow.Round(time.Millisecond), len(probe), windows, workers, roundDur(est),
			h.s.memInterval(), strings.Join(top, ", "))))
}

// windows is the number of non-zero windows the last pass saw (0 before the first).
func (m *memLoop) windows() int {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats.Blocks - m.stats.BlocksZero
}

// roundDur rounds an estimate for a message: to the second above ten seconds, else to
// the millisecond ("about 0s" would hide a pass of 400 ms against an interval of 300 ms).
func roundDur(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}
