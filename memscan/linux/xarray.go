package linux

import "fmt"

// vmem reads virtual memory: the kernel's address space, or a flat buffer in tests.
type vmem interface {
	Read(va uint64, b []byte) error
}

// xaLayout is where struct xa_node keeps its shift and slots, from BTF.
type xaLayout struct {
	shift, slots uint64
	chunk        int // XA_CHUNK_SIZE: the slots array's length
}

// Bounds of an XArray walk: the tree is at most ceil(64/6) levels deep.
const maxXADepth = 11

// XArray entry encoding (include/linux/xarray.h): internal entries have the low bits
// 10; those above 4096 are nodes (node address + 2), the small ones sibling, retry and
// zero entries. Values (bit 0 set) are integers, not pointers.
func xaIsNode(e uint64) bool     { return e&3 == 2 && e > 4096 }
func xaIsInternal(e uint64) bool { return e&3 == 2 }
func xaIsValue(e uint64) bool    { return e&1 == 1 }

// walkXArray calls fn with every pointer entry of the XArray whose xa_head is head, in
// index order. It reads at most limit entries and nodes together, refuses a tree deeper
// than the index can need, a node seen twice and a node whose shift does not fit its
// depth, and names the node in its errors.
func walkXArray(mem vmem, head uint64, l xaLayout, limit int, fn func(index, entry uint64) error) error {
	if l.chunk <= 0 || l.chunk > 256 {
		return fmt.Errorf("xa_node with %d slots", l.chunk)
	}
	w := xaWalk{mem: mem, l: l, limit: limit, fn: fn, seen: map[uint64]bool{}}
	if !xaIsNode(head) {
		if head != 0 && !xaIsInternal(head) && !xaIsValue(head) {
			return fn(0, head)
		}
		return nil
	}
	return w.node(head-2, 0, 0, -1)
}

type xaWalk struct {
	mem   vmem
	l     xaLayout
	limit int
	n     int
	seen  map[uint64]bool
	fn    func(index, entry uint64) error
}

// node visits the node at va, depth levels below the head; parentShift is the shift
// of its parent (-1 at the top): a child's shift is its parent's less XA_CHUNK_SHIFT.
func (w *xaWalk) node(va uint64, depth int, base uint64, parentShift int) error {
	if depth > maxXADepth {
		return fmt.Errorf("xa_node at %#x: deeper than %d levels", va, maxXADepth)
	}
	if w.seen[va] {
		return fmt.Errorf("xa_node at %#x: reached twice (a loop)", va)
	}
	w.seen[va] = true
	if w.n++; w.n > w.limit {
		return fmt.Errorf("xarray: more than %d nodes and entries", w.limit)
	}
	var sb [1]byte
	if err := w.mem.Read(va+w.l.shift, sb[:]); err != nil {
		return fmt.Errorf("xa_node at %#x: shift: %w", va, err)
	}
	shift := int(sb[0])
	chunkShift := 0
	for 1<<chunkShift < w.l.chunk {
		chunkShift++
	}
	if shift%chunkShift != 0 || shift >= 64 || parentShift >= 0 && shift != parentShift-chunkShift {
		return fmt.Errorf("xa_node at %#x: shift %d under a parent of shift %d", va, shift, parentShift)
	}
	slots := make([]byte, 8*w.l.chunk)
	if err := w.mem.Read(va+w.l.slots, slots); err != nil {
		return fmt.Errorf("xa_node at %#x: slots: %w", va, err)
	}
	for i := range w.l.chunk {
		e := le.Uint64(slots[8*i:])
		index := base | uint64(i)<<shift
		switch {
		case e == 0:
		case xaIsNode(e):
			if shift == 0 {
				return fmt.Errorf("xa_node at %#x: slot %d points to a node below shift 0", va, i)
			}
			if err := w.node(e-2, depth+1, index, shift); err != nil {
				return err
			}
		case xaIsInternal(e), xaIsValue(e):
			// sibling, retry or zero entry, or an integer: no pointer
		default:
			if w.n++; w.n > w.limit {
				return fmt.Errorf("xarray: more than %d nodes and entries", w.limit)
			}
			if err := w.fn(index, e); err != nil {
				return err
			}
		}
	}
	return nil
}
