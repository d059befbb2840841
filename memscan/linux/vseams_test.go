package linux

import (
	"testing"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
)

// TestSeams: two processes sharing the page tables of userSpace have one seam (0x400000
// and 0x401000 map frames 0x100000 and 0x300000), listed once with both holders at the
// seam's virtual address; the 2 MiB page, not virtually adjacent to it, adds none.
func TestSeams(t *testing.T) {
	k, _ := userSpace(t)
	k.Syms = &Kallsyms{}
	s := &Snapshot{g: &Guest{In: &Inspector{K: k}}, Tasks: []Task{{PID: 42, Comm: "victim", PGD: 0x1000}, {PID: 7, Comm: "twin", PGD: 0x1000}}}
	seams, err := s.Seams()
	if err != nil {
		t.Fatal(err)
	}
	want := memscan.Seam{Left: 0x100000, Right: 0x300000}
	if len(seams.List) != 1 || seams.List[0] != want || seams.Count[want] != 2 {
		t.Fatalf("seams %+v", seams)
	}
	if h := seams.Holders[want]; len(h) != 2 || h[0] != (SeamHolder{PID: 42, Comm: "victim", VA: 0x401000}) || h[1].PID != 7 {
		t.Errorf("holders %+v", h)
	}
}

// TestAddVirtual: a match across the seam is added as virtual, with each holder's
// virtual address of its first byte; a physical match of the same string at the same
// first byte (the part before the seam) is replaced by it; a rule found only across
// the seam is added with its metadata.
func TestAddVirtual(t *testing.T) {
	sm := memscan.Seam{Left: 0x100000, Right: 0x300000}
	seams := &Seams{List: []memscan.Seam{sm}, Count: map[memscan.Seam]int{sm: 2},
		Holders: map[memscan.Seam][]SeamHolder{sm: {{PID: 42, Comm: "victim", VA: 0x401000}, {PID: 7, Comm: "twin", VA: 0x7f001000}}}}
	first := uint64(0x100ff9) // 7 bytes before the seam
	phys := []detectors.Match{{Rule: "r", Namespace: "n", Strings: []detectors.StringMatch{
		{Name: "$a", Offset: 0x5000, Length: 9},
		{Name: "$a", Offset: first, Length: 7}, // a regex's shorter match, cut at the page end
	}}}
	res := memscan.SeamResult{Seams: 1, Scanned: 1, Matches: []memscan.SeamMatch{
		{Seam: sm, Match: detectors.Match{Rule: "r", Namespace: "n", Strings: []detectors.StringMatch{{Name: "$a", Offset: first, Length: 19}}}},
		{Seam: sm, Match: detectors.Match{Rule: "only", Namespace: "n", Tags: []string{"x"}, Strings: []detectors.StringMatch{{Name: "$b", Offset: first + 1, Length: 10}}}},
	}}
	ms, st := AddVirtual(phys, seams, res)
	if st.Matches != 2 || st.Deduped != 1 || len(ms) != 2 {
		t.Fatalf("stats %+v, %d rules", st, len(ms))
	}
	r := ms[0].Strings
	if len(r) != 2 || r[0].Offset != 0x5000 || r[0].Virtual || !r[1].Virtual || r[1].Length != 19 || r[1].ProcessCount != 2 ||
		r[1].Processes[0] != (detectors.ProcessMapping{PID: 7, Name: "twin", Address: 0x7f000ff9}) || r[1].Processes[1].Address != 0x400ff9 {
		t.Errorf("rule r: %+v", r)
	}
	if o := ms[1]; o.Rule != "only" || len(o.Tags) != 1 || len(o.Strings) != 1 || !o.Strings[0].Virtual || o.Strings[0].Processes[1].Address != 0x400ffa {
		t.Errorf("rule only: %+v", o)
	}
}

// FuzzSeams: any page tables as two processes' address spaces; the seams found are
// 4 KiB-aligned frame pairs that are not adjacent, listed once, in order, with holders
// at page-aligned addresses; attribution of any address gives each process the
// address's offset in the page; nothing reads past the table limit.
func FuzzSeams(f *testing.F) {
	_, m := userSpace(f)
	f.Add(m.b[:0x8000], uint64(0x300010))
	f.Add([]byte{}, uint64(0))
	f.Fuzz(func(t *testing.T, mem []byte, pa uint64) {
		ms := &memSource{b: mem}
		p := newPhys(ms)
		kk := &Kernel{p: p, Levels: 4, Syms: &Kallsyms{}, as: &AddressSpace{p: p, Levels: 4}}
		s := &Snapshot{g: &Guest{In: &Inspector{K: kk}}, Tasks: []Task{{PID: 1, Comm: "a", PGD: 0}, {PID: 2, Comm: "b", PGD: 0x1000}}}
		seams, err := s.Seams()
		if err != nil {
			return // the table limit, reported
		}
		for i, sm := range seams.List {
			if sm.Left&0xfff != 0 || sm.Right&0xfff != 0 || sm.Left+memscan.PageSize == sm.Right ||
				i > 0 && (seams.List[i-1].Left > sm.Left || seams.List[i-1] == sm) {
				t.Fatalf("seam %d %+v in %+v", i, sm, seams.List)
			}
			hs := seams.Holders[sm]
			if len(hs) == 0 || seams.Count[sm] < len(hs) {
				t.Fatalf("seam %+v: holders %+v, count %d", sm, hs, seams.Count[sm])
			}
			for _, h := range hs {
				if h.VA&0xfff != 0 {
					t.Fatalf("seam %+v holder %+v", sm, h)
				}
			}
		}
		attr, _, err := s.Attribute([]uint64{pa})
		if err != nil {
			return
		}
		for _, u := range attr[pa].Processes {
			if u.VA&0xfff != pa&0xfff {
				t.Fatalf("%#x attributed at %#x", pa, u.VA)
			}
		}
	})
}
