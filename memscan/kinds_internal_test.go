//go:build linux

package memscan

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// countHoles counts a holer's questions.
type countHoles struct {
	*MappedFile
	n int
}

func (c *countHoles) FirstData(gpa uint64, n int) int { c.n++; return c.MappedFile.FirstData(gpa, n) }

// TestKindsOneSeekPerBlock: setKinds asks each window's first data once and takes a
// block's overlap answer from the next block's, and its kinds are those of asking both
// questions for every block, over a memfd with data in a block alone, at a block's
// start (the block before reads only its overlap), across a block edge and in the last
// block's last page, and holes elsewhere.
func TestKindsOneSeekPerBlock(t *testing.T) {
	const bs, size = 64 << 10, 2 << 20
	fd, err := unix.MemfdCreate("domainm-kinds", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{3*bs + 100, 6 * bs, 10*bs - 8, size - 4096} {
		if _, err := f.WriteAt([]byte("DATA-DATA-DATA"), off); err != nil {
			t.Fatal(err)
		}
	}
	mf, err := OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), Layout{})
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	d := NewDriver(DriverConfig{BlockSize: bs, Overlap: 4096, Workers: 1})
	ranges, err := normalize(mf.Ranges())
	if err != nil {
		t.Fatal(err)
	}
	var run []block
	d.eachBlock(ranges, 0, func(b block) bool { run = append(run, b); return true })
	src := &countHoles{MappedFile: mf}
	w := &worker{d: d, src: src}
	w.setKinds(run)
	if src.n != len(run) {
		t.Errorf("%d lseeks for %d blocks, want one per block (the last window has no overlap)", src.n, len(run))
	}
	want := map[int]int{2: readOverlap, 3: readOwn, 5: readOverlap, 6: readOwn, 9: winData, 10: readOwn, len(run) - 1: winData}
	for i, b := range run {
		// both questions asked for the block, as before setKinds
		first, k := mf.FirstData(b.gpa, b.winSize), winData
		switch {
		case first >= b.winSize:
			k = 0
		case first >= b.size:
			k = readOverlap
		case b.winSize > b.size && mf.FirstData(b.gpa+uint64(b.size), b.winSize-b.size) >= b.winSize-b.size:
			k = readOwn
		}
		if w.kinds[i] != k {
			t.Errorf("block %d (%#x): kind %d, asking both questions %d", i, b.gpa, w.kinds[i], k)
		}
		if wk, ok := want[i]; ok && w.kinds[i] != wk {
			t.Errorf("block %d: kind %d, want %d", i, w.kinds[i], wk)
		} else if !ok && w.kinds[i] != 0 {
			t.Errorf("block %d: kind %d, want 0 (one hole)", i, w.kinds[i])
		}
	}
}
