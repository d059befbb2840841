package integrity

import "sort"

// Comparer compares the records of a new walk, fed one at a time, with a baseline.
// Memory is the baseline plus the changes found.
type Comparer struct {
	old map[string]*Record
}

// NewComparer indexes the baseline records.
func NewComparer(baseline []*Record) *Comparer {
	c := &Comparer{old: make(map[string]*Record, len(baseline))}
	for _, r := range baseline {
		c.old[r.Path] = r
	}
	return c
}

// Baseline returns the baseline record of path, or nil.
func (c *Comparer) Baseline(path string) *Record { return c.old[path] }

// Add compares one new record with the baseline; it returns nil when nothing changed.
func (c *Comparer) Add(r *Record) *Change {
	old, ok := c.old[r.Path]
	if ok {
		// Only Add writes seen; the walk reads other fields of old (Baseline).
		old.seen = true
	}
	if !ok {
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
	for p, r := range c.old {
		if !r.seen {
			out = append(out, Change{Detector: Detector, Kind: Removed, Path: p, PathRaw: r.PathRaw, Rule: r.Rule, Type: r.Type, Before: r})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
