package memscan

// BlockSet is a set of a pass's blocks, one bit per block: PassResult.Unchanged, the
// blocks whose content a pass found the same as in the pass before. Who derives
// something from guest memory (page tables, seam windows) can reuse what it derived
// from those blocks. The zero value is empty.
type BlockSet struct {
	ranges []Range
	bs     uint64
	bits   [][]uint64 // per range
}

func newBlockSet(ranges []Range, blockSize int) *BlockSet {
	s := &BlockSet{ranges: ranges, bs: uint64(blockSize), bits: make([][]uint64, len(ranges))}
	for i, r := range ranges {
		n := (r.Size + s.bs - 1) / s.bs
		s.bits[i] = make([]uint64, (n+63)/64)
	}
	return s
}

func (s *BlockSet) index(gpa uint64) (int, uint64, bool) {
	for i, r := range s.ranges {
		if gpa >= r.GPA && gpa < r.End() {
			return i, (gpa - r.GPA) / s.bs, true
		}
	}
	return 0, 0, false
}

func (s *BlockSet) add(gpa uint64) {
	if i, b, ok := s.index(gpa); ok {
		s.bits[i][b/64] |= 1 << (b % 64)
	}
}

// Has says whether the block holding gpa is in the set.
func (s *BlockSet) Has(gpa uint64) bool {
	if s == nil {
		return false
	}
	i, b, ok := s.index(gpa)
	return ok && s.bits[i][b/64]&(1<<(b%64)) != 0
}

// HasRange says whether every block holding [gpa, gpa+n) is in the set.
func (s *BlockSet) HasRange(gpa, n uint64) bool {
	if n == 0 {
		return s.Has(gpa)
	}
	for a := gpa; a < gpa+n; a = (a/s.bs + 1) * s.bs {
		if !s.Has(a) {
			return false
		}
	}
	return true
}

// Ranges returns the memory ranges of the pass the set belongs to.
func (s *BlockSet) Ranges() []Range { return append([]Range(nil), s.ranges...) }
