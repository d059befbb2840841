package memscan_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// slowRules hold a rule that makes libyara run past a one-second time limit on any
// non-zero block (nested loops over the window).
type slowRules struct{ r *yara.Rules }

func (rs slowRules) ID() string { return rs.r.ID() }
func (rs slowRules) NewScanner() (memscan.BlockScanner, error) {
	return rs.r.NewMemoryScanner(time.Second, 0)
}

// TestBlockErrorsSayWhatWhereWhen: a block that hits the YARA time limit and blocks
// that cannot be read (the RAM file truncated under its mapping) are reported each with
// its address, size, the time it failed and why: timeout or unreadable.
func TestBlockErrorsSayWhatWhereWhen(t *testing.T) {
	const mib = 1 << 20
	dir := t.TempDir()
	ram := filepath.Join(dir, "ram")
	f, err := os.Create(ram)
	if err != nil {
		t.Fatal(err)
	}
	// Bytes 0x02-0xfe only: the rule's condition never holds, so its loops run to the
	// time limit (random bytes let "for any" stop early when a match came soon).
	noise := make([]byte, 64<<10)
	for i := range noise {
		noise[i] = byte(2 + (i*131+i>>8)%253)
	}
	f.WriteAt(noise, 0) // block 0: non-zero, slow for the rule; blocks 1-3: zero
	f.Truncate(4 * mib)
	f.Close()
	src, err := memscan.OpenFile(ram, memscan.Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := os.Truncate(ram, 2*mib); err != nil { // blocks 2 and 3 are gone
		t.Fatal(err)
	}
	rdir := t.TempDir()
	os.WriteFile(filepath.Join(rdir, "slow.yar"), []byte(`rule slow { condition: for any i in (0..65535) :
		(for any j in (0..4000) : (uint8(i+j) == 0xff and uint8(i) == 0x00 and uint8(j) == 0x01)) }`), 0o644)
	r, err := yara.Compile(rdir)
	if err != nil {
		t.Fatal(err)
	}
	d := memscan.NewDriver(memscan.DriverConfig{BlockSize: mib, Workers: 1})
	before := time.Now()
	res, err := d.Pass(context.Background(), src, memscan.PassOptions{Rules: func() memscan.RuleSet { return slowRules{r} }})
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{0: memscan.ReasonTimeout, 2 * mib: memscan.ReasonUnreadable, 3 * mib: memscan.ReasonUnreadable}
	if len(res.Errors) != len(want) {
		t.Fatalf("%d block errors, want %d: %v", len(res.Errors), len(want), res.Errors)
	}
	for _, e := range res.Errors {
		if w, ok := want[e.GPA]; !ok || e.Reason() != w {
			t.Errorf("block %#x: reason %q, want %q (%v)", e.GPA, e.Reason(), w, e)
		}
		if e.Size != mib {
			t.Errorf("block %#x: size %d, want %d", e.GPA, e.Size, mib)
		}
		if e.At.Before(before) || e.At.After(after) {
			t.Errorf("block %#x: failed at %v, not within the pass (%v .. %v)", e.GPA, e.At, before, after)
		}
	}
	if res.BlocksZero != 1 {
		t.Errorf("%d zero blocks, want 1 (block 1)", res.BlocksZero)
	}
}
