package integrity

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"strings"
)

// Attr is one watched attribute of a file; an AttrSet is a set of them.
type Attr uint32

// AttrSet is a bit set of Attr values.
type AttrSet uint32

// Attributes a policy can watch.
const (
	AttrType   Attr = 1 << iota // file, dir, symlink, ...
	AttrMode                    // permission bits incl. setuid, setgid, sticky
	AttrUID                     // owner
	AttrGID                     // group
	AttrSize                    // size in bytes (may only grow on growing files)
	AttrMtime                   // modification time
	AttrCtime                   // inode change time
	AttrInode                   // inode number
	AttrNlink                   // hard-link count
	AttrLink                    // symlink target
	AttrCaps                    // security.capability xattr (file capabilities)
	AttrXattrs                  // all extended attributes
	AttrSHA256                  // content hash
	AttrSHA512                  // content hash
	attrEnd
)

// attrNames are the policy and report names, in report order.
var attrNames = []struct {
	a    Attr
	name string
}{
	{AttrType, "type"}, {AttrMode, "mode"}, {AttrUID, "uid"}, {AttrGID, "gid"},
	{AttrSize, "size"}, {AttrMtime, "mtime"}, {AttrCtime, "ctime"}, {AttrInode, "inode"},
	{AttrNlink, "nlink"}, {AttrLink, "link"}, {AttrCaps, "caps"}, {AttrXattrs, "xattrs"},
	{AttrSHA256, "sha256"}, {AttrSHA512, "sha512"},
}

// HashAttrs are the content-hash attributes.
const HashAttrs = AttrSet(AttrSHA256 | AttrSHA512)

// dirAttrs are compared on directories: their size, times and link count change
// whenever an entry is added or removed, and that entry is reported on its own.
const dirAttrs = AttrSet(AttrType | AttrMode | AttrUID | AttrGID | AttrInode | AttrCaps | AttrXattrs)

// growingIgnored are not compared on growing files (appending changes them).
const growingIgnored = AttrSet(AttrMtime | AttrCtime)

// Has reports whether a is in s.
func (s AttrSet) Has(a Attr) bool { return uint32(s)&uint32(a) != 0 }

// With returns s with a added.
func (s AttrSet) With(a Attr) AttrSet { return s | AttrSet(a) }

// Name is a's policy name.
func (a Attr) Name() string {
	for _, n := range attrNames {
		if n.a == a {
			return n.name
		}
	}
	return fmt.Sprintf("attr(%#x)", uint32(a))
}

// attrByName looks up a policy attribute name.
func attrByName(name string) (Attr, bool) {
	for _, n := range attrNames {
		if n.name == name {
			return n.a, true
		}
	}
	return 0, false
}

// Attrs lists the members of s in report order.
func (s AttrSet) Attrs() []Attr {
	out := make([]Attr, 0, bits.OnesCount32(uint32(s)))
	for _, n := range attrNames {
		if s.Has(n.a) {
			out = append(out, n.a)
		}
	}
	return out
}

// Names lists the names of the members of s in report order.
func (s AttrSet) Names() []string {
	as := s.Attrs()
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Name()
	}
	return out
}

func (s AttrSet) String() string { return strings.Join(s.Names(), ",") }

// MarshalJSON writes the set as a list of names, so the baseline stays readable.
func (s AttrSet) MarshalJSON() ([]byte, error) { return json.Marshal(s.Names()) }

// UnmarshalJSON reads a list of names.
func (s *AttrSet) UnmarshalJSON(b []byte) error {
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return err
	}
	var out AttrSet
	for _, n := range names {
		a, ok := attrByName(n)
		if !ok {
			return fmt.Errorf("unknown attribute %q", n)
		}
		out = out.With(a)
	}
	*s = out
	return nil
}
