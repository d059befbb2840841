package alert

import (
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/integrity"
)

// TestNewSetuidIsHigh: a setuid or setgid program that appears, or a file that becomes
// one, is at least high wherever it lies (the path class of /tmp alone would say low);
// a setgid directory or an unchanged mode keeps the path's class.
func TestNewSetuidIsHigh(t *testing.T) {
	at := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	tgt := detectors.Target{Name: "web-1"}
	rec := func(typ string, mode uint32, sha string) *integrity.Record {
		return &integrity.Record{Type: typ, Mode: mode, Inode: 12, Nlink: 1, Hashes: integrity.Hashes{SHA256: sha}}
	}
	cases := []struct {
		name string
		c    integrity.Change
		want Severity
	}{
		{"new setuid file in /tmp", integrity.Change{Kind: integrity.Added, Path: "/tmp/.x", Type: "file",
			After: rec("file", 0o4755, "aa")}, SevHigh},
		{"file made setgid", integrity.Change{Kind: integrity.Changed, Path: "/home/u/bin/tool", Type: "file",
			Attrs:  []integrity.AttrChange{{Attr: "mode", Before: "0755 (rwxr-xr-x)", After: "2755 (rwxr-sr-x)"}},
			Before: rec("file", 0o755, "aa"), After: rec("file", 0o2755, "aa")}, SevHigh},
		{"new plain file in /tmp", integrity.Change{Kind: integrity.Added, Path: "/tmp/.y", Type: "file",
			After: rec("file", 0o644, "aa")}, SevLow},
		{"new setgid directory", integrity.Change{Kind: integrity.Added, Path: "/tmp/shared", Type: "dir",
			After: rec("dir", 0o2775, "")}, SevLow},
		{"setuid file, content changed only", integrity.Change{Kind: integrity.Changed, Path: "/opt/x/helper", Type: "file",
			Attrs:  []integrity.AttrChange{{Attr: "sha256", Before: "aa", After: "bb"}},
			Before: rec("file", 0o4755, "aa"), After: rec("file", 0o4755, "bb")}, PathSeverity("/opt/x/helper")},
		{"setuid file removed", integrity.Change{Kind: integrity.Removed, Path: "/tmp/.z", Type: "file",
			Before: rec("file", 0o4755, "aa")}, SevLow},
	}
	for _, c := range cases {
		e := FromFinding(c.c.Finding(tgt, at), "")
		if e.Severity() != c.want {
			t.Errorf("%s: severity %v, want %v", c.name, e.Severity(), c.want)
		}
	}
}
