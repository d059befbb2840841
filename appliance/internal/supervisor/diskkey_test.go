package supervisor

import (
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/integrity"
)

// TestChangeKeyStable: the keys of alerted disk changes are saved in the state folder,
// so changeKey must give, from typed findings, the keys that the code before typed
// findings (Meta strings) saved; these were printed by that code (commit 465c042).
func TestChangeKeyStable(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	suid := &integrity.Record{Path: "/home/alice/x", Rule: "setuid", Type: "file", Mode: 0o4755, UID: 0, GID: 0, Size: 100,
		Mtime: t0, Ctime: t0, Inode: 12, Nlink: 1, Hashes: integrity.Hashes{SHA256: "aa"}, Attrs: integrity.AttrSet(1<<14 - 1),
		Xattrs: integrity.Xattrs{"security.capability": {1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "user.x": {1}}}
	link := &integrity.Record{Path: "/usr/bin/editor", Rule: "bin", Type: "symlink", Mode: 0o777, Size: 9, Mtime: t0, Ctime: t0, Inode: 13, Nlink: 1, Link: "/tmp/evil", Err: "partly"}
	unread := &integrity.Record{Path: "/etc/x", Rule: "etc", Err: "inode 12 is free"}
	b := *suid
	b.Mode, b.Hashes.SHA256, b.Mtime = 0o755, "bb", t0.Add(time.Second)
	cmp := integrity.NewComparer([]*integrity.Record{&b, unread})
	ch := cmp.Add(suid)
	u2 := &integrity.Record{Path: "/etc/x", Rule: "etc", Type: "file", Mode: 0o644, Inode: 20, Nlink: 1, Mtime: t0, Ctime: t0}
	ch2 := cmp.Add(u2)
	cs := []integrity.Change{
		{Detector: "integrity", Kind: integrity.Added, Path: suid.Path, Rule: suid.Rule, Type: "file", After: suid},
		{Detector: "integrity", Kind: integrity.Removed, Path: link.Path, Rule: link.Rule, Type: "symlink", Before: link},
		{Detector: "integrity", Kind: integrity.Added, Path: unread.Path, Rule: unread.Rule, After: unread},
		*ch, *ch2,
	}
	want := []string{
		"integrity-added\x00/home/alice/x\x00caps=cap_net_raw=ep\x00change=added\x00ctime=2026-01-02T03:04:05.000000006Z\x00gid=0\x00inode=12\x00mode=4755 (rwsr-xr-x)\x00mtime=2026-01-02T03:04:05.000000006Z\x00nlink=1\x00selection=setuid\x00sha256=aa\x00size=100\x00type=file\x00uid=0\x00xattrs=security.capability=0100000200200000000000000000000000000000 user.x=01",
		"integrity-removed\x00/usr/bin/editor\x00change=removed\x00ctime=2026-01-02T03:04:05.000000006Z\x00error=partly\x00gid=0\x00inode=13\x00link=/tmp/evil\x00mode=0777 (rwxrwxrwx)\x00mtime=2026-01-02T03:04:05.000000006Z\x00nlink=1\x00selection=bin\x00size=9\x00type=symlink\x00uid=0",
		"integrity-added\x00/etc/x\x00change=added\x00error=inode 12 is free\x00selection=etc\x00type=",
		"integrity-changed\x00/home/alice/x\x00change=changed\x00mode=0755 (rwxr-xr-x) -> 4755 (rwsr-xr-x)\x00mtime=2026-01-02T03:04:06.000000006Z -> 2026-01-02T03:04:05.000000006Z\x00selection=setuid\x00sha256=bb -> aa\x00type=file",
		"integrity-changed\x00/etc/x\x00change=changed\x00error=inode 12 is free -> \x00selection=etc\x00type=file",
		"R\x00/tmp/a\x00author=x\x00severity=high",
	}
	f := detectors.Finding{Detector: "yara-file", Rule: "R", Path: "/tmp/a", Meta: map[string]string{"severity": "high", "author": "x"}}
	var got []string
	for _, c := range cs {
		got = append(got, changeKey(c.Finding(detectors.Target{}, t0)))
	}
	got = append(got, changeKey(f))
	if len(got) != len(want) {
		t.Fatalf("%d keys, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("key %d:\n got %q\nwant %q", i, got[i], want[i])
		}
	}
}
