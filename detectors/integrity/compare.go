package integrity

import (
	"strconv"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/diskscan"
)

// Detector is the Finding.Detector and Change.Detector of integrity results.
const Detector = "integrity"

// ChangeKind says how an entry differs from the baseline.
type ChangeKind string

// Change kinds.
const (
	Added   ChangeKind = "added"
	Removed ChangeKind = "removed"
	Changed ChangeKind = "changed"
)

// AttrChange is one attribute's value before and after.
type AttrChange struct {
	Attr   string `json:"attr"`
	Before string `json:"before"`
	After  string `json:"after"`
}

// Change is one entry added, removed or changed since the baseline. Before is nil for
// added entries, After for removed ones.
type Change struct {
	Detector string       `json:"detector"` // always "integrity", so JSON lines say what they are
	Kind     ChangeKind   `json:"kind"`
	Path     string       `json:"path"`
	PathRaw  []byte       `json:"path_raw,omitempty"` // Path when it is not valid UTF-8
	Rule     string       `json:"rule"`
	Type     string       `json:"type"`
	Attrs    []AttrChange `json:"attrs,omitempty"`
	Before   *Record      `json:"before,omitempty"`
	After    *Record      `json:"after,omitempty"`
}

// errAttr is the pseudo attribute that reports a read error appearing or going away.
const errAttr = "error"

// Diff compares a baseline record with a new one of the same path and returns the
// attribute changes (none when equal).
func Diff(before, after *Record) []AttrChange {
	if before.unread() || after.unread() {
		// Without metadata on one side, only the error itself is a meaningful change.
		if before.Err == after.Err {
			return nil
		}
		return []AttrChange{{Attr: errAttr, Before: before.Err, After: after.Err}}
	}
	var out []AttrChange
	set := before.compared() | after.compared()
	if before.Type != after.Type {
		// A different type changes everything; report the type and what both watch.
		set = before.compared() & after.compared()
		set = set.With(AttrType)
	}
	for _, a := range set.Attrs() {
		if c, ok := diffAttr(a, before, after); ok {
			out = append(out, c)
		}
	}
	if before.Err != after.Err {
		out = append(out, AttrChange{Attr: errAttr, Before: before.Err, After: after.Err})
	}
	return out
}

// same compares raw values, so the common case (nothing changed) formats nothing.
func same(a Attr, x, y *Record) (eq, known bool) {
	switch a {
	case AttrType:
		return x.Type == y.Type, true
	case AttrMode:
		return x.Mode == y.Mode, true
	case AttrUID:
		return x.UID == y.UID, true
	case AttrGID:
		return x.GID == y.GID, true
	case AttrMtime:
		return x.Mtime.Equal(y.Mtime), true
	case AttrCtime:
		return x.Ctime.Equal(y.Ctime), true
	case AttrInode:
		return x.Inode == y.Inode, true
	case AttrNlink:
		return x.Nlink == y.Nlink, true
	case AttrLink:
		return x.Link == y.Link, true
	case AttrCaps:
		return string(x.Xattrs[capXattr]) == string(y.Xattrs[capXattr]), true
	}
	return false, false
}

func diffAttr(a Attr, before, after *Record) (AttrChange, bool) {
	if eq, known := same(a, before, after); known && eq {
		return AttrChange{}, false
	}
	if a == AttrSize && !after.Growing && before.Size == after.Size {
		return AttrChange{}, false
	}
	if a.isHash() && !after.Growing && before.Hashes.get(a) == after.Hashes.get(a) {
		return AttrChange{}, false
	}
	c := AttrChange{Attr: a.Name(), Before: before.value(a), After: after.value(a)}
	switch {
	case a == AttrSize && after.Growing && before.Growing:
		if after.Size >= before.Size {
			return c, false
		}
		c.After += " (shrank)"
		return c, true
	case a.isHash() && after.Growing && before.Growing:
		// The old content must be a prefix of the new one.
		if after.prefix != nil && after.Size >= before.Size {
			if after.prefix.get(a) == before.Hashes.get(a) {
				return c, false
			}
			c.After += " (content before offset " + strconv.FormatInt(before.Size, 10) + " changed)"
			return c, true
		}
		return c, c.Before != c.After
	}
	return c, c.Before != c.After
}

func (a Attr) isHash() bool { return HashAttrs.Has(a) }

// Finding turns the change into an alert-pipeline finding: Rule is "integrity-<kind>",
// Meta holds the selection, type and each changed attribute as "before -> after". An
// added entry carries its attributes, a removed one its last known attributes, as plain
// values (see recordMeta): they have no attribute changes, yet a new setuid file must
// say what it is.
func (c Change) Finding(t detectors.Target, now time.Time) detectors.Finding {
	meta := map[string]string{"selection": c.Rule, "type": c.Type, "change": string(c.Kind)}
	switch {
	case c.Kind == Added && c.After != nil:
		recordMeta(meta, c.After)
	case c.Kind == Removed && c.Before != nil:
		recordMeta(meta, c.Before)
	}
	for _, a := range c.Attrs {
		meta[a.Attr] = a.Before + " -> " + a.After
	}
	return detectors.Finding{
		Detector: Detector, Rule: "integrity-" + string(c.Kind), Path: c.Path,
		Meta: meta, Time: now, Target: t,
	}
}

// metaAttrs are the attributes every record has (Record keeps metadata whatever the
// selection compares).
var metaAttrs = []Attr{AttrType, AttrMode, AttrUID, AttrGID, AttrSize, AttrMtime, AttrCtime, AttrInode, AttrNlink}

// recordMeta adds an entry's attributes to meta as plain values, named as in the
// policy: its metadata, a symlink's target, capabilities and xattrs when it has any, the
// hashes that were computed, and "error" when it could not be fully read (an entry
// whose metadata could not be read at all carries only the error).
func recordMeta(meta map[string]string, r *Record) {
	if r.Err != "" {
		meta[errAttr] = r.Err
	}
	if r.unread() {
		return
	}
	for _, a := range metaAttrs {
		meta[a.Name()] = r.value(a)
	}
	if r.Type == diskscan.Symlink.String() {
		meta[AttrLink.Name()] = r.Link
	}
	for _, a := range []Attr{AttrCaps, AttrXattrs, AttrSHA256, AttrSHA512} {
		if v := r.value(a); v != "" {
			meta[a.Name()] = v
		}
	}
}
