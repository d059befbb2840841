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

// ruleSet adapts compiled YARA rules to memscan.RuleSet (the appliance has the same wiring).
type ruleSet struct{ r *yara.Rules }

func (rs ruleSet) ID() string { return rs.r.ID() }
func (rs ruleSet) NewScanner() (memscan.BlockScanner, error) {
	return rs.r.NewMemoryScanner(10*time.Second, 0)
}

func compile(t testing.TB, rules string) memscan.RuleSet {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test.yar"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := yara.Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ruleSet{r}
}

// memSource is guest memory held in byte slices: two ranges, like a split layout.
type memSource struct {
	ranges []memscan.Range
	data   [][]byte
}

func (m *memSource) Ranges() []memscan.Range { return m.ranges }
func (m *memSource) Close() error            { return nil }
func (m *memSource) find(gpa uint64, n int) []byte {
	for i, r := range m.ranges {
		if gpa >= r.GPA && gpa+uint64(n) <= r.End() {
			return m.data[i][gpa-r.GPA : gpa-r.GPA+uint64(n)]
		}
	}
	return nil
}
func (m *memSource) ReadAt(p []byte, gpa int64) (int, error) {
	b := m.find(uint64(gpa), len(p))
	if b == nil {
		return 0, memscan.ErrOutOfRange
	}
	return copy(p, b), nil
}

const testRules = `
rule marker { strings: $m = /DOMAINM-MARK-[0-9]{4}/ condition: $m }
rule other  { strings: $o = "SECOND-RULE-STRING" condition: $o }
`

func newMem() *memSource {
	low := make([]byte, 1<<20)
	high := make([]byte, 512<<10)
	return &memSource{
		ranges: []memscan.Range{{GPA: 0, Size: uint64(len(low))}, {GPA: 4 << 30, Size: uint64(len(high))}},
		data:   [][]byte{low, high},
	}
}

func (m *memSource) plant(gpa uint64, s string) { copy(m.find(gpa, len(s)), s) }

func addrs(res memscan.PassResult, rule string) []uint64 {
	var out []uint64
	for _, m := range res.Matches {
		if m.Rule == rule {
			for _, s := range m.Strings {
				out = append(out, s.Offset)
			}
		}
	}
	return out
}

func TestPassFindsEveryAddressOnce(t *testing.T) {
	const bs = 64 << 10
	want := []uint64{
		0x1234,               // inside a block
		bs - 7,               // straddles the first block boundary
		3*bs - 1,             // one byte before a boundary
		1<<20 - 17,           // end of the low range
		4 << 30,              // first byte of the high range
		4<<30 + 512<<10 - 17, // end of RAM
	}
	mem := newMem()
	for i, a := range want {
		mem.plant(a, "DOMAINM-MARK-000"+string(rune('0'+i)))
	}
	d := memscan.NewDriver(memscan.DriverConfig{BlockSize: bs, Overlap: 4096, Workers: 3})
	rs := compile(t, testRules)
	res, err := d.Pass(context.Background(), mem, memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }})
	if err != nil {
		t.Fatal(err)
	}
	got := addrs(res, "marker")
	if len(got) != len(want) {
		t.Fatalf("got %#x, want %#x", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("address %d = %#x, want %#x", i, got[i], want[i])
		}
	}
	if !res.Complete || len(res.Errors) > 0 {
		t.Errorf("complete=%v errors=%v", res.Complete, res.Errors)
	}
	// 16 low blocks + 8 high blocks; planted strings touch 6 of them (the straddling one two).
	if res.Blocks != 24 || res.BlocksScanned+res.BlocksZero != 24 || res.BlocksScanned < 6 || res.BlocksScanned > 8 {
		t.Errorf("blocks=%d scanned=%d zero=%d", res.Blocks, res.BlocksScanned, res.BlocksZero)
	}
	m := res.Matches[0]
	if m.Strings[0].Text != "DOMAINM-MARK-0000" || m.Namespace != "test" {
		t.Errorf("match = %+v", m)
	}
}

func TestSecondPassRescansOnlyChangedBlocks(t *testing.T) {
	const bs = 64 << 10
	mem := newMem()
	for i := range mem.data[0] {
		mem.data[0][i] = byte(i*7 + 1) // no zero blocks in the low range
	}
	mem.plant(0x20000, "DOMAINM-MARK-1111")
	// Change detection alone: no forced rescans of unchanged blocks in these few passes
	// (TestUnchangedBlocksRescannedWithinBound covers those).
	d := memscan.NewDriver(memscan.DriverConfig{BlockSize: bs, Workers: 2, ReusePasses: 1000})
	rs := compile(t, testRules)
	opts := memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}
	first, err := d.Pass(context.Background(), mem, opts)
	if err != nil {
		t.Fatal(err)
	}
	second, _ := d.Pass(context.Background(), mem, opts)
	if second.BlocksScanned != 0 || second.BlocksUnchanged != first.BlocksScanned {
		t.Fatalf("second pass scanned %d, unchanged %d (first scanned %d)", second.BlocksScanned, second.BlocksUnchanged, first.BlocksScanned)
	}
	if a := addrs(second, "marker"); len(a) != 1 || a[0] != 0x20000 {
		t.Fatalf("cached findings lost: %#x", a)
	}
	// Change one block: the string moves, the block before it also sees it in its overlap window.
	mem.plant(0x20000, "xxxxxxxxxxxxxxxxx")
	mem.plant(0x50000, "SECOND-RULE-STRING")
	third, _ := d.Pass(context.Background(), mem, opts)
	// Four windows changed: the blocks at 0x20000 and 0x50000, and the blocks before them,
	// whose overlap reaches into the changed bytes.
	if third.BlocksScanned != 4 {
		t.Fatalf("third pass scanned %d blocks, want 4", third.BlocksScanned)
	}
	if a := addrs(third, "marker"); len(a) != 0 {
		t.Fatalf("stale finding %#x", a)
	}
	if a := addrs(third, "other"); len(a) != 1 || a[0] != 0x50000 {
		t.Fatalf("new finding %#x", a)
	}
	// A new rule set rescans everything that is not zero.
	rs2 := compile(t, testRules+"\nrule third { condition: false }")
	opts.Rules = func() memscan.RuleSet { return rs2 }
	fourth, _ := d.Pass(context.Background(), mem, opts)
	if fourth.BlocksUnchanged != 0 || fourth.BlocksScanned != first.BlocksScanned {
		t.Fatalf("new rules: scanned %d unchanged %d", fourth.BlocksScanned, fourth.BlocksUnchanged)
	}
}

// TestUnchangedBlocksRescannedWithinBound: the change hash is fast, not cryptographic. A
// block whose cached hash still matches (as after a crafted collision) is scanned again
// within ReusePasses passes, and the rescans are spread over the passes.
func TestUnchangedBlocksRescannedWithinBound(t *testing.T) {
	const bs, reuse = 64 << 10, 4
	mem := newMem()
	for i := range mem.data[0] {
		mem.data[0][i] = byte(i*7 + 1)
	}
	d := memscan.NewDriver(memscan.DriverConfig{BlockSize: bs, Workers: 2, ReusePasses: reuse})
	rs := compile(t, testRules)
	opts := memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}
	first, err := d.Pass(context.Background(), mem, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Plant the marker behind the cache's back: the driver's cached hash for the block
	// still describes the old bytes, as if the new content collided with it.
	memscan.ForgeCachedHash(d, mem, func() { mem.plant(0x20000, "DOMAINM-MARK-1111") })
	total := 0
	found := -1
	for pass := 1; pass <= reuse+1; pass++ {
		res, err := d.Pass(context.Background(), mem, opts)
		if err != nil {
			t.Fatal(err)
		}
		total += res.BlocksScanned
		if res.BlocksScanned > first.BlocksScanned/2 {
			t.Errorf("pass %d rescanned %d of %d blocks at once: not spread", pass, res.BlocksScanned, first.BlocksScanned)
		}
		if found < 0 && len(addrs(res, "marker")) == 1 {
			found = pass
		}
	}
	if found < 0 {
		t.Fatalf("marker planted under an unchanged hash not found within %d passes", reuse+1)
	}
	if total < first.BlocksScanned {
		t.Errorf("%d blocks rescanned over %d passes, want every one of the %d at least once", total, reuse+1, first.BlocksScanned)
	}
}

func TestCancelAndResumeFromCursor(t *testing.T) {
	const bs = 64 << 10
	mem := newMem()
	for i := range mem.data[0] {
		mem.data[0][i] = byte(i + 1)
	}
	mem.plant(0x1000, "DOMAINM-MARK-0001")
	mem.plant(0xF0000, "DOMAINM-MARK-0002")
	mem.plant(4<<30+0x100, "DOMAINM-MARK-0003")
	rs := compile(t, testRules)
	// Batch 1: a worker takes one block at a time, so the pass stops within a block or
	// two of the cancel (with runs of Batch blocks it stops after the runs in flight).
	d := memscan.NewDriver(memscan.DriverConfig{BlockSize: bs, Workers: 1, Batch: 1})
	ctx, cancel := context.WithCancel(context.Background())
	res, err := d.Pass(ctx, mem, memscan.PassOptions{
		Rules: func() memscan.RuleSet { return rs },
		Progress: func(done, total uint64) {
			if done >= 4*bs {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Complete || res.Cursor == 0 || res.Cursor >= 1<<20 {
		t.Fatalf("complete=%v cursor=%#x", res.Complete, res.Cursor)
	}
	rest, err := d.Pass(context.Background(), mem, memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }, StartAt: res.Cursor})
	if err != nil {
		t.Fatal(err)
	}
	got := append(addrs(res, "marker"), addrs(rest, "marker")...)
	want := []uint64{0x1000, 0xF0000, 4<<30 + 0x100}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("got %#x want %#x", got, want)
	}
	doneFirst := res.BlocksScanned + res.BlocksZero + res.BlocksUnchanged
	if !rest.Complete || res.Blocks != 24 || doneFirst+rest.Blocks != 24 {
		t.Fatalf("blocks: first pass %d of %d, rest %d", doneFirst, res.Blocks, rest.Blocks)
	}
}
