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

// AttrChange is one attribute's value before and after, as reports print them; the
// finding an alert is made of carries the same values.
type AttrChange = detectors.AttrChange

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
// Namespace the policy selection, Change the kind, Changes the attribute changes (the
// pseudo attribute "error" included). File holds an added entry's attributes, a removed
// one's last known attributes (they have no attribute changes, yet a new setuid file
// must say what it is), and a changed one's type and new values of the changed
// attributes, whose old values are in Before.
func (c Change) Finding(t detectors.Target, now time.Time) detectors.Finding {
	f := detectors.Finding{
		Detector: Detector, Rule: "integrity-" + string(c.Kind), Namespace: c.Rule, Path: c.Path,
		Change: string(c.Kind), Changes: append([]AttrChange(nil), c.Attrs...), Time: now, Target: t,
	}
	switch {
	case c.Kind == Added && c.After != nil:
		f.File = c.After.info()
	case c.Kind == Removed && c.Before != nil:
		f.File = c.Before.info()
	case c.Kind == Changed:
		var set AttrSet
		for _, a := range c.Attrs {
			if x, ok := attrByName(a.Attr); ok {
				set = set.With(x)
			}
		}
		f.File, f.Before = c.After.infoOf(set), c.Before.infoOf(set)
	}
	if f.File == nil {
		f.File = &detectors.FileInfo{}
	}
	f.File.Type = c.Type
	return f
}

// metaAttrs are the attributes every record has (Record keeps metadata whatever the
// selection compares).
var metaAttrs = AttrSet(AttrType | AttrMode | AttrUID | AttrGID | AttrSize | AttrMtime | AttrCtime | AttrInode | AttrNlink)

// info describes the whole entry: its metadata, a symlink's target, capabilities and
// xattrs when it has any, the hashes that were computed, and its read error (an entry
// whose metadata could not be read at all has only the error).
func (r *Record) info() *detectors.FileInfo {
	if r.unread() {
		return &detectors.FileInfo{Error: r.Err}
	}
	set := metaAttrs | AttrSet(AttrCaps|AttrXattrs|AttrSHA256|AttrSHA512)
	if r.Type == diskscan.Symlink.String() {
		set = set.With(AttrLink)
	}
	fi := r.infoOf(set)
	fi.Error = r.Err
	return fi
}

// infoOf describes the attributes in set (nil for a nil record).
func (r *Record) infoOf(set AttrSet) *detectors.FileInfo {
	if r == nil {
		return nil
	}
	fi := &detectors.FileInfo{}
	for _, a := range set.Attrs() {
		switch a {
		case AttrType:
			fi.Type = r.Type
		case AttrMode:
			fi.Mode = ptr(r.Mode)
		case AttrUID:
			fi.UID = ptr(r.UID)
		case AttrGID:
			fi.GID = ptr(r.GID)
		case AttrSize:
			fi.Size = ptr(r.Size)
		case AttrMtime:
			fi.Mtime = r.Mtime.UTC()
		case AttrCtime:
			fi.Ctime = r.Ctime.UTC()
		case AttrInode:
			fi.Inode = ptr(r.Inode)
		case AttrNlink:
			fi.Nlink = ptr(r.Nlink)
		case AttrLink:
			fi.Link = r.Link
		case AttrCaps, AttrXattrs:
			v := r.value(a)
			if a == AttrCaps {
				fi.Caps = v
			} else {
				fi.Xattrs = v
			}
		case AttrSHA256:
			fi.SHA256 = r.Hashes.SHA256
		case AttrSHA512:
			fi.SHA512 = r.Hashes.SHA512
		}
	}
	return fi
}

func ptr[T any](v T) *T { return &v }
