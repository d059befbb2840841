package integrity

import (
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/diskscan"
)

func TestBuiltinGroupsAreNotAttributes(t *testing.T) {
	for name := range builtinGroups {
		if _, ok := attrByName(name); ok {
			t.Errorf("built-in group %q shadows an attribute", name)
		}
	}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

func fileRec(path string) *Record {
	e := &diskscan.Entry{Path: path, Type: diskscan.Regular, Mode: 0o755, UID: 0, GID: 0, Size: 100,
		Mtime: t0, Ctime: t0, Inode: 12, Nlink: 1}
	all := AttrSet(attrEnd - 1)
	r := newRecord(e, "bin", all&^AttrSet(AttrSHA512), false)
	r.Hashes = Hashes{SHA256: "aa"}
	return r
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(r *Record)
		want   []AttrChange
	}{
		{"same", func(r *Record) {}, nil},
		{"content only", func(r *Record) { r.Hashes.SHA256 = "bb" }, []AttrChange{{Attr: "sha256", Before: "aa", After: "bb"}}},
		{"setuid", func(r *Record) { r.Mode = 0o4755 }, []AttrChange{{Attr: "mode", Before: "0755 (rwxr-xr-x)", After: "4755 (rwsr-xr-x)"}}},
		{"owner", func(r *Record) { r.UID, r.GID = 1000, 1000 }, []AttrChange{{Attr: "uid", Before: "0", After: "1000"}, {Attr: "gid", Before: "0", After: "1000"}}},
		{"nlink", func(r *Record) { r.Nlink = 2 }, []AttrChange{{Attr: "nlink", Before: "1", After: "2"}}},
		{"mtime", func(r *Record) { r.Mtime = t0.Add(time.Second) },
			[]AttrChange{{Attr: "mtime", Before: "2026-01-02T03:04:05.000000006Z", After: "2026-01-02T03:04:06.000000006Z"}}},
		{"caps", func(r *Record) {
			r.Xattrs = map[string][]byte{capXattr: {0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
			r.Xattrs[capXattr][0] = 1 // effective
		}, []AttrChange{{Attr: "caps", Before: "", After: "cap_net_raw=ep"}, {Attr: "xattrs", Before: "", After: "security.capability=0100000200200000000000000000000000000000"}}},
		{"error", func(r *Record) { r.Err = "bad inode" }, []AttrChange{{Attr: "error", Before: "", After: "bad inode"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := fileRec("/bin/x"), fileRec("/bin/x")
			tc.change(b)
			if got := Diff(a, b); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Diff = %+v\nwant   %+v", got, tc.want)
			}
		})
	}
}

func TestDiffUnreadable(t *testing.T) {
	a := fileRec("/bin/x")
	b := &Record{Path: "/bin/x", Rule: "bin", Attrs: a.Attrs, Type: a.Type, Err: "inode 12 is free"}
	want := []AttrChange{{Attr: "error", Before: "", After: "inode 12 is free"}}
	if got := Diff(a, b); !reflect.DeepEqual(got, want) {
		t.Errorf("Diff = %+v, want %+v", got, want)
	}
	if got := Diff(b, b); got != nil {
		t.Errorf("same error twice: Diff = %+v, want none", got)
	}
}

func TestDiffTypeAndSymlink(t *testing.T) {
	a, b := fileRec("/bin/x"), fileRec("/bin/x")
	a.Type, a.Link, a.Hashes = "symlink", "/usr/bin/a", Hashes{}
	b.Type, b.Link, b.Hashes = "symlink", "/tmp/evil", Hashes{}
	want := []AttrChange{{Attr: "link", Before: "/usr/bin/a", After: "/tmp/evil"}}
	if got := Diff(a, b); !reflect.DeepEqual(got, want) {
		t.Errorf("symlink Diff = %+v, want %+v", got, want)
	}
	c := fileRec("/bin/x")
	got := Diff(a, c)
	if len(got) == 0 || got[0] != (AttrChange{Attr: "type", Before: "symlink", After: "file"}) {
		t.Errorf("type change Diff = %+v", got)
	}
}

func TestDiffDirectoryIgnoresTimes(t *testing.T) {
	a, b := fileRec("/etc"), fileRec("/etc")
	a.Type, b.Type = "dir", "dir"
	b.Mtime, b.Ctime, b.Size, b.Nlink = t0.Add(time.Hour), t0.Add(time.Hour), 4096, 3
	if got := Diff(a, b); got != nil {
		t.Errorf("dir Diff = %+v, want none", got)
	}
	b.Mode = 0o777
	if got := Diff(a, b); len(got) != 1 || got[0].Attr != "mode" {
		t.Errorf("dir mode Diff = %+v", got)
	}
}

func TestDiffGrowing(t *testing.T) {
	base := func() *Record {
		r := fileRec("/var/log/syslog")
		r.Growing = true
		return r
	}
	a := base()
	b := base()
	b.Size, b.Mtime, b.Ctime, b.Hashes = 150, t0.Add(time.Hour), t0.Add(time.Hour), Hashes{SHA256: "cc"}
	b.prefix = &Hashes{SHA256: "aa"}
	if got := Diff(a, b); got != nil {
		t.Errorf("appended log Diff = %+v, want none", got)
	}
	b.prefix.SHA256 = "dd"
	if got := Diff(a, b); len(got) != 1 || got[0].Attr != "sha256" {
		t.Errorf("rewritten log Diff = %+v, want sha256", got)
	}
	c := base()
	c.Size, c.Hashes = 10, Hashes{SHA256: "ee"}
	got := Diff(a, c)
	if len(got) != 2 || got[0] != (AttrChange{Attr: "size", Before: "100", After: "10 (shrank)"}) || got[1].Attr != "sha256" {
		t.Errorf("truncated log Diff = %+v", got)
	}
}

func TestComparer(t *testing.T) {
	c := NewComparer([]*Record{fileRec("/a"), fileRec("/b"), fileRec("/c")})
	if ch := c.Add(fileRec("/a")); ch != nil {
		t.Errorf("unchanged /a: %+v", ch)
	}
	b := fileRec("/b")
	b.Size = 5
	if ch := c.Add(b); ch == nil || ch.Kind != Changed || ch.Before == nil || ch.After != b {
		t.Errorf("changed /b: %+v", ch)
	}
	if ch := c.Add(fileRec("/d")); ch == nil || ch.Kind != Added || ch.Before != nil {
		t.Errorf("added /d: %+v", ch)
	}
	rm := c.Removed()
	if len(rm) != 1 || rm[0].Path != "/c" || rm[0].Kind != Removed || rm[0].After != nil {
		t.Errorf("removed = %+v", rm)
	}
	f := rm[0].Finding(detectors.Target{Name: "vm"}, t0)
	if f.Detector != "integrity" || f.Rule != "integrity-removed" || f.Path != "/c" {
		t.Errorf("finding = %+v", f)
	}
}

func TestFormatCaps(t *testing.T) {
	v3 := []byte{1, 0, 0, 3, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{nil, ""},
		{[]byte{1, 2}, "hex:0102"},
		{v3, "cap_net_admin,cap_net_raw=ep [rootid=0]"},
		{[]byte{0, 0, 0, 2, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "cap_chown=p cap_dac_override=i"},
	} {
		if got := FormatCaps(tc.in); got != tc.want {
			t.Errorf("FormatCaps(%x) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestFindingCarriesRecord: an added entry's finding carries its attributes, a removed
// one its last known attributes; an entry that could not be read carries its error.
func TestFindingCarriesRecord(t *testing.T) {
	suid := fileRec("/home/alice/x")
	suid.Mode, suid.Err = 0o4755, ""
	link := fileRec("/usr/bin/editor")
	link.Type, link.Link, link.Hashes = "symlink", "/tmp/evil", Hashes{}
	unread := &Record{Path: "/etc/x", Rule: "etc", Err: "inode 12 is free"}
	u32 := func(p *uint32) string {
		if p == nil {
			return ""
		}
		return strconv.FormatUint(uint64(*p), 10)
	}
	meta := func(f *detectors.FileInfo) map[string]string {
		m := map[string]string{"type": f.Type, "link": f.Link, "sha256": f.SHA256, "error": f.Error,
			"uid": u32(f.UID), "nlink": u32(f.Nlink)}
		if f.Mode != nil {
			m["mode"] = FormatMode(f.Type, *f.Mode)
		}
		if f.Size != nil {
			m["size"] = strconv.FormatInt(*f.Size, 10)
		}
		if f.Inode != nil {
			m["inode"] = strconv.FormatUint(*f.Inode, 10)
		}
		return m
	}
	for _, tc := range []struct {
		name string
		c    Change
		want map[string]string
	}{
		{"added setuid file", Change{Kind: Added, Path: suid.Path, Type: "file", After: suid},
			map[string]string{"mode": "4755 (rwsr-xr-x)", "uid": "0", "size": "100", "sha256": "aa", "nlink": "1", "inode": "12"}},
		{"removed symlink", Change{Kind: Removed, Path: link.Path, Type: "symlink", Before: link},
			map[string]string{"link": "/tmp/evil", "type": "symlink", "mode": "0755 (rwxr-xr-x)"}},
		{"added unreadable", Change{Kind: Added, Path: unread.Path, After: unread},
			map[string]string{"error": "inode 12 is free", "mode": ""}},
	} {
		f := tc.c.Finding(detectors.Target{}, t0)
		if f.Change != string(tc.c.Kind) || f.File == nil {
			t.Fatalf("%s: change %q, file %v", tc.name, f.Change, f.File)
		}
		m := meta(f.File)
		for k, v := range tc.want {
			if m[k] != v {
				t.Errorf("%s: file %s = %q, want %q", tc.name, k, m[k], v)
			}
		}
	}
}

// TestChangedFindingTyped: a changed entry's finding carries each changed attribute's
// new value in File and old value in Before, typed, and the changes as reported.
func TestChangedFindingTyped(t *testing.T) {
	before, after := fileRec("/usr/bin/x"), fileRec("/usr/bin/x")
	after.Mode, after.Hashes.SHA256 = 0o4755, "bb"
	c := NewComparer([]*Record{before}).Add(after)
	if c == nil {
		t.Fatal("no change")
	}
	f := c.Finding(detectors.Target{}, t0)
	if f.File.Mode == nil || *f.File.Mode != 0o4755 || f.Before.Mode == nil || *f.Before.Mode != before.Mode ||
		f.File.SHA256 != "bb" || f.Before.SHA256 != "aa" || f.File.UID != nil || f.File.Type != "file" {
		t.Errorf("file %+v before %+v", f.File, f.Before)
	}
	if len(f.Changes) != 2 || f.Changes[0] != (AttrChange{Attr: "mode", Before: FormatMode("file", before.Mode), After: "4755 (rwsr-xr-x)"}) {
		t.Errorf("changes %+v", f.Changes)
	}
}
