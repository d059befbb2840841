package memscan

import "github.com/zeebo/xxh3"

// ForgeCachedHash runs change on src's memory and then rewrites the driver's cached hash
// of every block to describe the new bytes, keeping the old matches: the state a hash
// collision crafted by the guest would leave behind.
func ForgeCachedHash(d *Driver, src Source, change func()) {
	change()
	ranges, err := normalize(src.Ranges())
	if err != nil {
		panic(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.eachBlock(ranges, 0, func(b block) bool {
		st, ok := d.cache[b.gpa]
		if !ok || st.zero {
			return true
		}
		buf := make([]byte, b.winSize)
		if _, err := src.ReadAt(buf, int64(b.gpa)); err != nil {
			panic(err)
		}
		st.hash = xxh3.HashSeed(buf, d.seed)
		d.cache[b.gpa] = st
		return true
	})
}

// ScreenAlways keeps d's workers screening whatever the screen costs against scanning
// alone (worker.screenPays and worker.judge), so that a test takes the screen's path every
// run.
func ScreenAlways(d *Driver) { d.screenAlways = true }

// OnRun has fn told the length of each run of blocks d's dispatcher hands to a worker,
// in order, as it is handed out.
func OnRun(d *Driver, fn func(n int)) { d.runSent = fn }

// CopyHash is copyHash with seed 1, for the window-cost breakdown.
func CopyHash(dst, src []byte) uint64 { return copyHash(dst, src, 1, newHashSecret(1)) }

// CallBudget is how long one rule-engine call of a run is meant to take (ScanEach).
const CallBudget = callBudget
