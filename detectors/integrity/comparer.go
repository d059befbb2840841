package integrity

import "sort"

// Comparer compares the records of a new walk, fed one at a time, with a baseline.
// Memory is the baseline plus the changes found.
//
// A path normally has one record. A damaged guest directory can hold two entries of
// the same name, and the walk then gives that path twice, in the same order in every
// walk: the n-th record of a path is compared with the n-th record of that path in the
// baseline.
type Comparer struct {
	old  map[string]*Record   // the first baseline record of each path
	more map[string][]*Record // later baseline records of a path, in walk order
	met  map[string]int       // records of such a path that Add has seen
}

// NewComparer indexes the baseline records.
func NewComparer(baseline []*Record) *Comparer {
	c := &Comparer{old: make(map[string]*Record, len(baseline))}
	for _, r := range baseline {
		if _, dup := c.old[r.Path]; !dup {
			c.old[r.Path] = r
			continue
		}
		if c.more == nil {
			c.more, c.met = map[string][]*Record{}, map[string]int{}
		}
		c.more[r.Path] = append(c.more[r.Path], r)
	}
	return c
}

// Baseline returns the (first) baseline record of path, or nil.
func (c *Comparer) Baseline(path string) *Record { return c.old[path] }

// match returns the baseline record the next record of path pairs with, or nil, and
// marks it seen.
func (c *Comparer) match(path string) *Record {
	old, ok := c.old[path]
	if !ok {
		return nil
	}
	if old.seen {
		i := c.met[path]
		if i >= len(c.more[path]) {
			return nil
		}
		c.met[path] = i + 1
		old = c.more[path][i]
	}
	// Only Add writes seen; the walk reads other fields of old (Baseline).
	old.seen = true
	return old
}

// Add compares one new record with the baseline; it returns nil when nothing changed.
func (c *Comparer) Add(r *Record) *Change {
	old := c.match(r.Path)
	if old == nil {
		return &Change{Detector: Detector, Kind: Added, Path: r.Path, PathRaw: r.PathRaw, Rule: r.Rule, Type: r.Type, After: r}
	}
	attrs := Diff(old, r)
	if len(attrs) == 0 {
		return nil
	}
	return &Change{Detector: Detector, Kind: Changed, Path: r.Path, PathRaw: r.PathRaw, Rule: r.Rule, Type: r.Type, Attrs: attrs, Before: old, After: r}
}

// Removed returns the baseline entries that no Add call saw, sorted by path.
func (c *Comparer) Removed() []Change {
	var out []Change
	removed := func(r *Record) {
		if !r.seen {
			out = append(out, Change{Detector: Detector, Kind: Removed, Path: r.Path, PathRaw: r.PathRaw, Rule: r.Rule, Type: r.Type, Before: r})
		}
	}
	for _, r := range c.old {
		removed(r)
	}
	for _, rs := range c.more {
		for _, r := range rs {
			removed(r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
