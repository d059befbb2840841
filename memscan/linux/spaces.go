package linux

import (
	"github.com/domainm/domainm/memscan"
)

// An address space's mappings change far less often than they are looked at: every
// pass walks every process's page tables (seams, attribution). A walk's result depends
// only on the tables it read, so when the pass found every block holding them unchanged
// (memscan.PassResult.Unchanged), the result of the last walk still holds and the
// tables are not read again.

// spaceKey is a walked range of an address space.
type spaceKey struct{ root, lo, hi uint64 }

// spaceWalk is what one walk of a range found.
type spaceWalk struct {
	tables  []uint64 // physical addresses of the tables read
	runs    []run    // leaf mappings, merged where virtually and physically contiguous
	checked *memscan.BlockSet
}

// run is a virtually and physically contiguous mapping.
type run struct{ va, pa, size uint64 }

// maxCachedRuns bounds the runs the cache holds over all address spaces.
const maxCachedRuns = 1 << 21

// spaceCache holds the last walk of each address space, valid while the blocks holding
// its tables stay unchanged from pass to pass. Used by one goroutine at a time.
type spaceCache struct {
	walks      map[spaceKey]*spaceWalk
	runs       int
	prev, cur  *memscan.BlockSet // the last two passes' unchanged sets
	hits, miss int
}

// rotate starts a pass whose unchanged blocks are set (nil: none known); entries not
// checked in the pass before are dropped: a block unchanged now may have changed in a
// pass in which they were not looked at.
func (c *spaceCache) rotate(set *memscan.BlockSet) {
	if set == c.cur {
		return
	}
	c.prev, c.cur = c.cur, set
	for k, w := range c.walks {
		if w.checked != c.prev || c.prev == nil {
			c.runs -= len(w.runs)
			delete(c.walks, k)
		}
	}
}

// runs returns the mappings of [lo, hi) in the address space rooted at root: the cached
// walk when its tables are unchanged since it was last checked, else a new walk.
func (c *spaceCache) get(w *ptWalker, root, lo, hi uint64) ([]run, error) {
	k := spaceKey{root, lo, hi}
	if sw, ok := c.walks[k]; ok && c.cur != nil && (sw.checked == c.prev || sw.checked == c.cur) && unchanged(c.cur, sw.tables) {
		sw.checked = c.cur
		c.hits++
		return sw.runs, nil
	}
	c.miss++
	var tables []uint64
	var runs []run
	w.Visited = &tables
	err := w.walk(root, lo, hi, func(va, pa, size uint64) {
		if n := len(runs); n > 0 && runs[n-1].va+runs[n-1].size == va && runs[n-1].pa+runs[n-1].size == pa {
			runs[n-1].size += size
			return
		}
		runs = append(runs, run{va, pa, size})
	})
	w.Visited = nil
	if err != nil {
		return nil, err
	}
	if c.walks == nil {
		c.walks = map[spaceKey]*spaceWalk{}
	}
	if old, ok := c.walks[k]; ok {
		c.runs -= len(old.runs)
		delete(c.walks, k)
	}
	if c.cur != nil && c.runs+len(runs) <= maxCachedRuns {
		c.walks[k] = &spaceWalk{tables: tables, runs: runs, checked: c.cur}
		c.runs += len(runs)
	}
	return runs, nil
}

func unchanged(set *memscan.BlockSet, tables []uint64) bool {
	for _, t := range tables {
		if !set.Has(t) {
			return false
		}
	}
	return true
}
