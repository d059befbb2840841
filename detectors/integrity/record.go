package integrity

import (
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/domainm/domainm/diskscan"
)

// Record is what the baseline keeps of one guest path. Metadata is always recorded (it
// is cheap, and it describes added and removed entries); Attrs says which attributes
// are compared, and Hashes holds the content hashes Attrs asks for.
type Record struct {
	Path    string    `json:"path"`
	Rule    string    `json:"rule"` // selection name, or SetuidRule
	Attrs   AttrSet   `json:"attrs"`
	Growing bool      `json:"growing,omitempty"`
	Type    string    `json:"type,omitempty"` // diskscan.FileType names
	Mode    uint32    `json:"mode"`
	UID     uint32    `json:"uid"`
	GID     uint32    `json:"gid"`
	Size    int64     `json:"size"`
	Mtime   time.Time `json:"mtime"`
	Ctime   time.Time `json:"ctime"`
	Inode   uint64    `json:"inode"`
	Nlink   uint32    `json:"nlink"`
	Link    string    `json:"link,omitempty"`
	Xattrs  Xattrs    `json:"xattrs,omitempty"`
	Hashes  Hashes    `json:"hashes,omitzero"`
	// Err is set when the entry or its content could not be read; the other fields
	// then hold what could be read.
	Err string `json:"error,omitempty"`
	// PathRaw and LinkRaw hold Path and Link byte for byte when they are not valid
	// UTF-8 (guest names are bytes; JSON strings would replace the invalid ones, and a
	// later check would see a different path). Set by newRecord, used by ReadDB.
	PathRaw []byte `json:"path_raw,omitempty"`
	LinkRaw []byte `json:"link_raw,omitempty"`
	// prefix is, on a growing file, the hash of its first baseline-size bytes (check only).
	prefix *Hashes
	// seen marks a baseline record whose path the check met (Comparer only).
	seen bool
}

const capXattr = "security.capability"

func newRecord(e *diskscan.Entry, rule string, attrs AttrSet, growing bool) *Record {
	r := &Record{
		Path: e.Path, Rule: rule, Attrs: attrs, Growing: growing,
		Type: e.Type.String(), Mode: e.Mode, UID: e.UID, GID: e.GID, Size: e.Size,
		Mtime: e.Mtime.UTC(), Ctime: e.Ctime.UTC(), Inode: e.Inode, Nlink: e.Nlink,
		Link: e.LinkTarget,
	}
	r.setRaw()
	if len(e.Xattrs) > 0 {
		r.Xattrs = make(Xattrs, len(e.Xattrs))
		for k, v := range e.Xattrs {
			r.Xattrs[k] = append([]byte(nil), v...)
		}
	}
	return r
}

func (r *Record) setRaw() {
	if !utf8.ValidString(r.Path) {
		r.PathRaw = []byte(r.Path)
	}
	if !utf8.ValidString(r.Link) {
		r.LinkRaw = []byte(r.Link)
	}
}

// restoreRaw undoes the JSON replacement of invalid UTF-8 after decoding.
func (r *Record) restoreRaw() {
	if r.PathRaw != nil {
		r.Path = string(r.PathRaw)
	}
	if r.LinkRaw != nil {
		r.Link = string(r.LinkRaw)
	}
}

// Hashes are content hashes in hex, by algorithm (a fixed struct, not a map: a baseline
// holds one per file, and a check keeps the whole baseline in memory).
type Hashes struct {
	SHA256 string `json:"sha256,omitempty"`
	SHA512 string `json:"sha512,omitempty"`
}

func (h *Hashes) get(a Attr) string {
	switch a {
	case AttrSHA256:
		return h.SHA256
	case AttrSHA512:
		return h.SHA512
	}
	return ""
}

func (h *Hashes) set(a Attr, v string) {
	switch a {
	case AttrSHA256:
		h.SHA256 = v
	case AttrSHA512:
		h.SHA512 = v
	}
}

// unread reports whether the entry's metadata could not be read at all (inode 0 is
// never a valid inode).
func (r *Record) unread() bool { return r.Err != "" && r.Inode == 0 }

// compared is the set of attributes compared on this record.
func (r *Record) compared() AttrSet {
	s := r.Attrs
	if r.Type == diskscan.Dir.String() {
		s &= dirAttrs
	}
	if r.Type != diskscan.Regular.String() {
		s &^= HashAttrs
	}
	if r.Type != diskscan.Symlink.String() {
		s &^= AttrSet(AttrLink)
	}
	if r.Growing {
		s &^= growingIgnored
	}
	return s
}

// value renders one attribute for reports.
func (r *Record) value(a Attr) string {
	switch a {
	case AttrType:
		return r.Type
	case AttrMode:
		return FormatMode(r.Type, r.Mode)
	case AttrUID:
		return strconv.FormatUint(uint64(r.UID), 10)
	case AttrGID:
		return strconv.FormatUint(uint64(r.GID), 10)
	case AttrSize:
		return strconv.FormatInt(r.Size, 10)
	case AttrMtime:
		return r.Mtime.UTC().Format(time.RFC3339Nano)
	case AttrCtime:
		return r.Ctime.UTC().Format(time.RFC3339Nano)
	case AttrInode:
		return strconv.FormatUint(r.Inode, 10)
	case AttrNlink:
		return strconv.FormatUint(uint64(r.Nlink), 10)
	case AttrLink:
		return r.Link
	case AttrCaps:
		return FormatCaps(r.Xattrs[capXattr])
	case AttrXattrs:
		return formatXattrs(r.Xattrs)
	case AttrSHA256, AttrSHA512:
		return r.Hashes.get(a)
	}
	return ""
}

// FormatMode renders permission bits as octal and as ls would, e.g. "4755 (rwsr-xr-x)".
func FormatMode(typ string, mode uint32) string {
	const rwx = "rwxrwxrwx"
	b := []byte("---------")
	for i := 0; i < 9; i++ {
		if mode&(1<<(8-i)) != 0 {
			b[i] = rwx[i]
		}
	}
	special := func(bit uint32, i int, set, unset byte) {
		if mode&bit != 0 {
			if b[i] == 'x' {
				b[i] = set
			} else {
				b[i] = unset
			}
		}
	}
	special(0o4000, 2, 's', 'S')
	special(0o2000, 5, 's', 'S')
	special(0o1000, 8, 't', 'T')
	return fmt.Sprintf("%04o (%s)", mode&0o7777, b)
}

func formatXattrs(x map[string][]byte) string {
	if len(x) == 0 {
		return ""
	}
	names := slices.Sorted(maps.Keys(x))
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = k + "=" + hex.EncodeToString(x[k])
	}
	return strings.Join(parts, " ")
}
