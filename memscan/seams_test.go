package memscan

import (
	"bytes"
	"context"
	"testing"

	"github.com/domainm/domainm/detectors"
)

// memSrc is guest RAM in a slice at GPA 0.
type memSrc []byte

func (m memSrc) Ranges() []Range { return []Range{{GPA: 0, Size: uint64(len(m))}} }
func (m memSrc) ReadAt(p []byte, gpa int64) (int, error) {
	if gpa < 0 || int(gpa)+len(p) > len(m) {
		return 0, ErrOutOfRange
	}
	return copy(p, m[gpa:]), nil
}
func (m memSrc) Close() error { return nil }

// needleRules finds every occurrence of a fixed string, counting scans.
type needleRules struct {
	needle string
	scans  *int
}

func (r needleRules) ID() string                        { return "needle:" + r.needle }
func (r needleRules) NewScanner() (BlockScanner, error) { return needleScanner(r), nil }

type needleScanner needleRules

func (s needleScanner) Close() {}
func (s needleScanner) Scan(buf []byte, base uint64) ([]detectors.Match, error) {
	*s.scans++
	m := detectors.Match{Rule: "needle", Namespace: "t"}
	for i := 0; ; {
		j := bytes.Index(buf[i:], []byte(s.needle))
		if j < 0 {
			break
		}
		sm := detectors.StringMatch{Name: "$n", Offset: uint64(i + j), Length: len(s.needle)}
		sm.SetData(buf[i+j : i+j+len(s.needle)])
		m.Strings = append(m.Strings, sm)
		i += j + 1
	}
	if len(m.Strings) == 0 {
		return nil, nil
	}
	return []detectors.Match{m}, nil
}

// TestSeamScanner: a needle split between the end of frame 0x5000 and the start of frame
// 0x2000 is found across the seam {0x5000, 0x2000}, at the physical address of its first
// byte; a needle wholly inside one side is not reported (the physical pass has it); an
// unchanged window is not scanned again, a changed one is; windows with a zero side are skipped.
func TestSeamScanner(t *testing.T) {
	ram := make(memSrc, 64<<10)
	const needle = "SPLIT-ACROSS-A-SEAM"
	copy(ram[0x6000-7:], needle[:7])
	copy(ram[0x2000:], needle[7:])
	copy(ram[0x5800:], needle) // whole, left side: not the seam scan's to report
	scans := 0
	rules := needleRules{needle: needle, scans: &scans}
	sc := NewSeamScanner(0, 2, 12)
	ram[0xc000] = 1 // the right side of the third seam is not zero, its left is
	seams := []Seam{{Left: 0x5000, Right: 0x2000}, {Left: 0x9000, Right: 0xb000}, {Left: 0x9000, Right: 0xc000}}
	res, err := sc.Scan(context.Background(), ram, seams, rules, nil)
	if err != nil || len(res.Errors) > 0 {
		t.Fatal(err, res.Errors)
	}
	if res.Seams != 3 || res.Zero != 2 || res.Scanned != 1 || len(res.Matches) != 1 {
		t.Fatalf("result %+v", res)
	}
	m := res.Matches[0]
	if m.Seam != seams[0] || len(m.Match.Strings) != 1 || m.Match.Strings[0].Offset != 0x6000-7 || m.Match.Strings[0].Text != needle {
		t.Errorf("match %+v", m)
	}
	// Unchanged: reused, not scanned.
	res, _ = sc.Scan(context.Background(), ram, seams, rules, nil)
	if res.Scanned != 0 || res.Unchanged != 1 || res.Zero != 2 || len(res.Matches) != 1 || scans != 1 {
		t.Errorf("unchanged pass: %+v, %d scans", res, scans)
	}
	// The right side changes: scanned again, the needle is gone.
	ram[0x2000] = 'x'
	res, _ = sc.Scan(context.Background(), ram, seams, rules, nil)
	if res.Scanned != 1 || len(res.Matches) != 0 {
		t.Errorf("changed pass: %+v", res)
	}
	// Passes whose memory pass found the frames' blocks unchanged: the first reads the
	// windows (nothing checked them under a known set before), the second trusts the set
	// and reads nothing, even though the test changed the bytes behind its back.
	all := newBlockSet(ram.Ranges(), PageSize)
	for a := uint64(0); a < uint64(len(ram)); a += PageSize {
		all.add(a)
	}
	sc.Scan(context.Background(), ram, seams, rules, all)
	ram[0x2000] = needle[7]
	all2 := newBlockSet(ram.Ranges(), PageSize)
	all2.bits = all.bits
	res, _ = sc.Scan(context.Background(), ram, seams, rules, all2)
	if res.Scanned != 0 || res.Unchanged != 1 || res.Zero != 2 || len(res.Matches) != 0 {
		t.Errorf("pass over unchanged blocks: %+v", res)
	}
	// The block changed: read, scanned, found again.
	res, _ = sc.Scan(context.Background(), ram, seams, rules, newBlockSet(ram.Ranges(), PageSize))
	if res.Scanned != 1 || len(res.Matches) != 1 {
		t.Errorf("pass over changed blocks: %+v", res)
	}
	// A frame outside RAM is an error for that seam only.
	res, _ = sc.Scan(context.Background(), ram, []Seam{{Left: 1 << 30, Right: 0}}, rules, nil)
	if len(res.Errors) != 1 {
		t.Errorf("seam outside RAM: %+v", res)
	}
}
