package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/diskscan/ext4test"
	"github.com/domainm/domainm/image/testenv"
)

// diskFixture is an original filesystem image and a copy changed with debugfs.
type diskFixture struct {
	tree          *diskTree
	orig, changed string // bare ext4 images
	toolAfter     []byte // /usr/bin/tool's content after the in-place overwrite
	editorInode   uint64 // inode of the replaced symlink, after
	sudoAfter     []byte // /usr/bin/sudo's content after it was rewritten
	sudoInode     uint64 // and its inode
}

// diskCapNetRaw is a VFS_CAP_REVISION_2 security.capability: cap_net_raw, effective.
var diskCapNetRaw = []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// weirdName is a guest file name with a newline and a byte that is not UTF-8.
const weirdName = "/etc/evil\nFAKE-LINE\xff"

var pinned = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func makeDiskFixture(t *testing.T) *diskFixture {
	t.Helper()
	dir := t.TempDir()
	f := &diskFixture{tree: makeDiskTree(t), orig: filepath.Join(dir, "orig.ext4"), changed: filepath.Join(dir, "changed.ext4")}
	ext4test.Mkfs(t, f.orig, f.tree.dir, 16, "-b", "4096")
	b, err := os.ReadFile(f.orig)
	diskMust(t, err)
	diskMust(t, os.WriteFile(f.changed, b, 0o600))

	// Content changed behind the filesystem's back: size, mtime and ctime stay.
	ext4test.Overwrite(t, f.changed, "/usr/bin/tool", []byte(diskEvilMarker))
	f.toolAfter = append([]byte(diskEvilMarker), f.tree.files["usr/bin/tool"][len(diskEvilMarker):]...)

	rootsh := filepath.Join(dir, "rootsh")
	diskMust(t, os.WriteFile(rootsh, []byte("#!/bin/sh\n# "+diskEvilMarker+"\nexec /bin/sh -p\n"), 0o755))
	ts := pinned.Format("20060102150405")
	ext4test.Debugfs(t, f.changed,
		// A symlink pointed elsewhere.
		"rm /usr/bin/editor", "symlink /usr/bin/editor /tmp/evil",
		"sif /usr/bin/editor mtime "+ts, "sif /usr/bin/editor mtime_extra 0",
		"sif /usr/bin/editor ctime "+ts, "sif /usr/bin/editor ctime_extra 0",
		// Mode (setuid) and owner changed.
		"sif /usr/bin/daemon mode 0104750", "sif /usr/bin/daemon uid 1000",
		// A file added to a hard-linked set.
		"ln /usr/lib/libx.so.1 /usr/lib/libx-copy.so", "sif /usr/lib/libx.so.1 links_count 3",
		// A file removed.
		"rm /etc/cron.d/old",
		// A new setuid file in an excluded, unselected folder.
		"write "+rootsh+" /tmp/rootsh", "sif /tmp/rootsh mode 0104755", "sif /tmp/rootsh uid 0", "sif /tmp/rootsh gid 0",
	)
	// A new file whose name would forge a report line and is not UTF-8.
	plain := filepath.Join(dir, "plain")
	diskMust(t, os.WriteFile(plain, []byte("plain\n"), 0o644))
	// (debugfs -f splits on newlines: this one goes through -R.)
	if out := testenv.Run(t, "debugfs", "-w", "-R", "write "+plain+" "+weirdName, f.changed); !strings.Contains(out, "Allocated inode") {
		t.Fatalf("debugfs write %q: %s", weirdName, out)
	}
	// File capabilities added to a binary (a backdoor that needs no setuid bit).
	capFile := filepath.Join(dir, "cap")
	diskMust(t, os.WriteFile(capFile, diskCapNetRaw, 0o600))
	ext4test.Debugfs(t, f.changed, "ea_set -f "+capFile+" /usr/bin/elf security.capability")
	// Content replaced through the filesystem (debugfs write) with the same size, and the
	// mtime set back: only ctime, which user space cannot set, and the hash give it away.
	sudo := filepath.Join(dir, "sudo")
	f.sudoAfter = bytes.Repeat([]byte("S"), len(f.tree.files["usr/bin/sudo"]))
	diskMust(t, os.WriteFile(sudo, f.sudoAfter, 0o755))
	ext4test.Debugfs(t, f.changed, "rm /usr/bin/sudo", "write "+sudo+" /usr/bin/sudo",
		"sif /usr/bin/sudo mode 0104755", "sif /usr/bin/sudo uid 0", "sif /usr/bin/sudo gid 0",
		"sif /usr/bin/sudo mtime 20240506070809", "sif /usr/bin/sudo mtime_extra 0",
		"sif /usr/bin/sudo ctime "+ts, "sif /usr/bin/sudo ctime_extra 0")
	ext4test.Fsck(t, f.changed)
	f.sudoInode = ext4test.Inode(t, f.changed, "/usr/bin/sudo")
	f.editorInode = ext4test.Inode(t, f.changed, "/usr/bin/editor")
	return f
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// parseCheckJSON splits check --json output into changes and findings.
func parseCheckJSON(t *testing.T, out string) (map[string]integrity.Change, []detectors.Finding) {
	t.Helper()
	changes := map[string]integrity.Change{}
	var findings []detectors.Finding
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var probe struct{ Detector string }
		if err := json.Unmarshal(sc.Bytes(), &probe); err != nil {
			t.Fatalf("bad JSON line %q: %v", sc.Text(), err)
		}
		switch probe.Detector {
		case "integrity":
			c := decodeChange(t, sc.Bytes())
			if c.PathRaw != nil { // the exact bytes of a name that is not UTF-8
				c.Path = string(c.PathRaw)
			}
			if _, dup := changes[c.Path]; dup {
				t.Errorf("%s reported twice", c.Path)
			}
			changes[c.Path] = c
		case "yara-file":
			findings = append(findings, decodeFinding(t, sc.Bytes()))
		default:
			t.Fatalf("line without a known detector: %s", sc.Text())
		}
	}
	return changes, findings
}

const diskTestRule = `rule planted_marker {
  meta:
    description = "test marker"
  strings:
    $m = "` + diskEvilMarker + `"
  condition:
    $m
}
`

func TestDiskBaselineCheckLayouts(t *testing.T) {
	fx := makeDiskFixture(t)
	rules := t.TempDir()
	diskMust(t, os.WriteFile(filepath.Join(rules, "test.yar"), []byte(diskTestRule), 0o600))
	for _, tc := range []struct{ layout, format string }{
		{"bare", "raw"}, {"bare", "qcow2"}, {"mbr", "raw"}, {"mbr", "qcow2"}, {"gpt", "raw"}, {"gpt", "qcow2"},
	} {
		t.Run(tc.layout+"-"+tc.format, func(t *testing.T) {
			orig, part := diskLayout(t, fx.orig, tc.layout, tc.format)
			changed, _ := diskLayout(t, fx.changed, tc.layout, tc.format)
			db := filepath.Join(t.TempDir(), "state", "base.db")
			diskMust(t, os.MkdirAll(filepath.Dir(db), 0o700))
			args := []string{"baseline", "--image", orig, "--db", db}
			if tc.layout == "mbr" {
				args = append(args, "--partition", fmt.Sprint(part)) // gpt and bare: found automatically
			}
			code, out, errOut := diskCLI(t, args...)
			if code != ExitClean {
				t.Fatalf("baseline: exit %d\n%s%s", code, out, errOut)
			}
			hdr, base, _, err := integrity.ReadDB(db)
			diskMust(t, err)
			wantPart := -1 // as given: gpt and bare are found automatically
			if tc.layout == "mbr" {
				wantPart = part
			}
			if hdr.Image.Format != tc.format || hdr.Image.Partition != wantPart || hdr.Image.Path != orig {
				t.Errorf("baseline image identity %+v, want format %s partition %d", hdr.Image, tc.format, wantPart)
			}
			byPath := map[string]*integrity.Record{}
			for _, r := range base {
				byPath[r.Path] = r
			}
			for _, p := range []string{"/usr/bin/tool", "/etc/passwd", "/usr/bin/sudo", "/home/al/.ssh/authorized_keys", "/var/log/syslog"} {
				if byPath[p] == nil {
					t.Errorf("baseline lacks %s", p)
				}
			}
			for _, p := range []string{"/tmp/scratch", "/usr/lib/python3/__pycache__/m.pyc"} {
				if byPath[p] != nil {
					t.Errorf("baseline has excluded %s", p)
				}
			}
			if r := byPath["/usr/bin/sudo"]; r == nil || r.Mode != 0o4755 {
				t.Errorf("baseline record of /usr/bin/sudo = %+v, want mode 4755", r)
			}
			if r := byPath["/usr/bin/tool"]; r == nil || r.Hashes.SHA256 != sha(fx.tree.files["usr/bin/tool"]) {
				t.Fatalf("baseline record of /usr/bin/tool = %+v, want sha256 of the file", r)
			}

			code, out, errOut = diskCLI(t, "check", "--image", changed, "--db", db, "--json", "--rules", rules)
			if code != ExitFindings {
				t.Fatalf("check: exit %d, want %d\n%s%s", code, ExitFindings, out, errOut)
			}
			changes, findings := parseCheckJSON(t, out)
			ed := byPath["/usr/bin/editor"]
			editorAttrs := []integrity.AttrChange{
				{Attr: "size", Before: "13", After: "9"},
				{Attr: "mtime", Before: ed.Mtime.Format(time.RFC3339Nano), After: pinned.Format(time.RFC3339Nano)},
				{Attr: "ctime", Before: ed.Ctime.Format(time.RFC3339Nano), After: pinned.Format(time.RFC3339Nano)},
			}
			if ed.Inode != fx.editorInode {
				editorAttrs = append(editorAttrs, integrity.AttrChange{Attr: "inode", Before: fmt.Sprint(ed.Inode), After: fmt.Sprint(fx.editorInode)})
			}
			editorAttrs = append(editorAttrs, integrity.AttrChange{Attr: "link", Before: "/usr/bin/tool", After: "/tmp/evil"})
			su := byPath["/usr/bin/sudo"]
			sudoAttrs := []integrity.AttrChange{{Attr: "ctime", Before: su.Ctime.Format(time.RFC3339Nano), After: pinned.Format(time.RFC3339Nano)}}
			if su.Inode != fx.sudoInode {
				sudoAttrs = append(sudoAttrs, integrity.AttrChange{Attr: "inode", Before: fmt.Sprint(su.Inode), After: fmt.Sprint(fx.sudoInode)})
			}
			sudoAttrs = append(sudoAttrs, integrity.AttrChange{Attr: "sha256", Before: sha(fx.tree.files["usr/bin/sudo"]), After: sha(fx.sudoAfter)})
			want := map[string]struct {
				kind  integrity.ChangeKind
				rule  string
				attrs []integrity.AttrChange
			}{
				"/usr/bin/tool": {integrity.Changed, "system binaries", []integrity.AttrChange{
					{Attr: "sha256", Before: sha(fx.tree.files["usr/bin/tool"]), After: sha(fx.toolAfter)}}},
				"/usr/bin/editor": {integrity.Changed, "system binaries", editorAttrs},
				"/usr/bin/sudo":   {integrity.Changed, "system binaries", sudoAttrs},
				"/usr/bin/elf": {integrity.Changed, "system binaries", []integrity.AttrChange{
					{Attr: "caps", Before: "", After: "cap_net_raw=ep"},
					{Attr: "xattrs", Before: "", After: "security.capability=" + hex.EncodeToString(diskCapNetRaw)}}},
				"/usr/bin/daemon": {integrity.Changed, "system binaries", []integrity.AttrChange{
					{Attr: "mode", Before: "0755 (rwxr-xr-x)", After: "4750 (rwsr-x---)"},
					{Attr: "uid", Before: "0", After: "1000"}}},
				"/usr/lib/libx.so.1":    {integrity.Changed, "libraries", []integrity.AttrChange{{Attr: "nlink", Before: "2", After: "3"}}},
				"/usr/lib/libx.so":      {integrity.Changed, "libraries", []integrity.AttrChange{{Attr: "nlink", Before: "2", After: "3"}}},
				"/usr/lib/libx-copy.so": {integrity.Added, "libraries", nil},
				"/etc/cron.d/old":       {integrity.Removed, "cron", nil},
				"/tmp/rootsh":           {integrity.Added, integrity.SetuidRule, nil},
				weirdName:               {integrity.Added, "configuration", nil},
			}
			for p, w := range want {
				c, ok := changes[p]
				if !ok {
					t.Errorf("%s: not reported, want %s", p, w.kind)
					continue
				}
				if c.Kind != w.kind || c.Rule != w.rule || !reflect.DeepEqual(c.Attrs, w.attrs) {
					t.Errorf("%s: got %s [%s] %+v\nwant %s [%s] %+v", p, c.Kind, c.Rule, c.Attrs, w.kind, w.rule, w.attrs)
				}
			}
			for p, c := range changes {
				if _, ok := want[p]; !ok {
					t.Errorf("unexpected change %s %q %+v", c.Kind, p, c.Attrs)
				}
			}
			if c := changes["/tmp/rootsh"]; c.After == nil || c.After.Mode != 0o4755 || c.After.Type != "file" {
				t.Errorf("/tmp/rootsh after = %+v", c.After)
			}
			if c := changes["/etc/cron.d/old"]; c.Before == nil || c.Before.Hashes.SHA256 != sha(fx.tree.files["etc/cron.d/old"]) {
				t.Errorf("/etc/cron.d/old before = %+v", c.Before)
			}
			// YARA ran over new and changed files only: /usr/bin/ls has the marker too.
			var hits []string
			for _, f := range findings {
				if f.Rule != "planted_marker" || f.Namespace != "test" || len(f.Matches) == 0 {
					t.Errorf("finding %+v", f)
				}
				hits = append(hits, f.Path)
			}
			sort.Strings(hits)
			if !reflect.DeepEqual(hits, []string{"/tmp/rootsh", "/usr/bin/tool"}) {
				t.Errorf("YARA findings on %v, want /tmp/rootsh and /usr/bin/tool", hits)
			}
			var sum diskCheckSummary
			diskMust(t, json.Unmarshal([]byte(errOut), &sum))
			if sum.Added != 3 || sum.Removed != 1 || sum.Changed != 7 || sum.Findings != 2 || sum.Updated {
				t.Errorf("summary = %+v", sum)
			}

			// --update reports, then makes the new state the baseline: the next check is clean.
			if code, out, errOut = diskCLI(t, "check", "--image", changed, "--db", db, "--update"); code != ExitFindings ||
				!strings.Contains(out, "baseline "+db+" updated") {
				t.Fatalf("check --update: exit %d\n%s%s", code, out, errOut)
			}
			if code, out, errOut = diskCLI(t, "check", "--image", changed, "--db", db); code != ExitClean ||
				!strings.Contains(out, "0 added, 0 removed, 0 changed") {
				t.Fatalf("check after update: exit %d\n%s%s", code, out, errOut)
			}
			// And the original image now shows the reverse changes.
			if code, _, _ = diskCLI(t, "check", "--image", orig, "--db", db); code != ExitFindings {
				t.Errorf("check of the original after update: exit %d, want %d", code, ExitFindings)
			}
		})
	}
}

func TestDiskCheckText(t *testing.T) {
	fx := makeDiskFixture(t)
	db := filepath.Join(t.TempDir(), "base.db")
	if code, out, errOut := diskCLI(t, "baseline", "--image", fx.orig, "--db", db); code != ExitClean {
		t.Fatalf("baseline: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := diskCLI(t, "check", "--image", fx.changed, "--db", db)
	if code != ExitFindings {
		t.Fatalf("check: %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"3 added, 1 removed, 7 changed",
		`  f "/etc/evil\nFAKE-LINE\xff"  [configuration]` + "\n",
		"  f /tmp/rootsh  [setuid]\n      mode 4755 (rwsr-xr-x)  uid 0  gid 0  size 53\n",
		"  f /usr/lib/libx-copy.so  [libraries]\n      mode 0644 (rw-r--r--)  uid 0  gid 0  size 9000\n",
		"Removed entries:\n  f /etc/cron.d/old  [cron]\n",
		"  f /usr/bin/daemon  [system binaries]\n      mode    - 0755 (rwxr-xr-x)\n              + 4750 (rwsr-x---)\n      uid     - 0\n              + 1000\n",
		"  l /usr/bin/editor  [system binaries]\n",
		"      link    - /usr/bin/tool\n              + /tmp/evil\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\nFAKE-LINE") {
		t.Errorf("a guest file name forged a report line:\n%s", out)
	}
}

// TestDiskTrustMetadata shows what trust_metadata means: an in-place change that keeps
// size, mtime, ctime and inode is missed where a selection trusts metadata, and caught
// where it does not (the default).
func TestDiskTrustMetadata(t *testing.T) {
	fx := makeDiskFixture(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.toml")
	diskMust(t, os.WriteFile(pol, []byte(`version = 1
[[select]]
name = "bin"
paths = ["/usr/bin/tool"]
attrs = ["content"]
trust_metadata = true
`), 0o600))
	db := filepath.Join(dir, "base.db")
	if code, out, errOut := diskCLI(t, "baseline", "--image", fx.orig, "--db", db, "--policy", pol); code != ExitClean {
		t.Fatalf("baseline: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := diskCLI(t, "check", "--image", fx.changed, "--db", db, "--json")
	if code != ExitClean || out != "" {
		t.Fatalf("trusting metadata: exit %d, want 0 and nothing reported\n%s%s", code, out, errOut)
	}
	var sum diskCheckSummary
	diskMust(t, json.Unmarshal([]byte(errOut), &sum))
	if sum.Reused != 1 || sum.HashedFiles != 0 {
		t.Errorf("summary %+v, want the hash reused and nothing hashed", sum)
	}
	diskMust(t, os.WriteFile(pol, []byte(`version = 1
[[select]]
name = "bin"
paths = ["/usr/bin/tool"]
attrs = ["content"]
`), 0o600))
	if code, out, errOut := diskCLI(t, "baseline", "--image", fx.orig, "--db", db, "--policy", pol); code != ExitClean {
		t.Fatalf("baseline: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = diskCLI(t, "check", "--image", fx.changed, "--db", db, "--json")
	changes, _ := parseCheckJSON(t, out)
	if code != ExitFindings || len(changes) != 1 || len(changes["/usr/bin/tool"].Attrs) != 1 || changes["/usr/bin/tool"].Attrs[0].Attr != "sha256" {
		t.Fatalf("default (no trust): exit %d, changes %+v\n%s", code, changes, errOut)
	}
}

func TestDiskPolicyErrorNamesLine(t *testing.T) {
	fx := makeDiskFixture(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "bad.toml")
	diskMust(t, os.WriteFile(pol, []byte("version = 1\n\n[[select]]\npaths = [\"/etc\"]\nattrs = [\"sha256\"]\nrecursve = true\n"), 0o600))
	db := filepath.Join(dir, "base.db")
	code, _, errOut := diskCLI(t, "baseline", "--image", fx.orig, "--db", db, "--policy", pol)
	if code != ExitError || !strings.Contains(errOut, pol+`:6: unknown key "select.recursve"`) {
		t.Fatalf("exit %d, stderr %q; want exit 2 naming %s:6", code, errOut, pol)
	}
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Errorf("a baseline was written despite the bad policy: %v", err)
	}
}

// TestDiskBaselineInterruptedKeepsOld interrupts a baseline run: the previous baseline
// stays complete and no temporary file is left.
func TestDiskBaselineInterruptedKeepsOld(t *testing.T) {
	fx := makeDiskFixture(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "base.db")
	if code, out, errOut := diskCLI(t, "baseline", "--image", fx.orig, "--db", db); code != ExitClean {
		t.Fatalf("baseline: %d\n%s%s", code, out, errOut)
	}
	before, err := os.ReadFile(db)
	diskMust(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb strings.Builder
	code := Main(ctx, Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb},
		[]string{"baseline", "--image", fx.changed, "--db", db})
	if code != ExitError {
		t.Fatalf("interrupted baseline: exit %d, want %d\n%s%s", code, ExitError, out.String(), errb.String())
	}
	after, err := os.ReadFile(db)
	diskMust(t, err)
	if string(before) != string(after) {
		t.Error("the baseline changed although the run was interrupted")
	}
	if _, _, _, err := integrity.ReadDB(db); err != nil {
		t.Errorf("old baseline unreadable: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	// A corrupt baseline is an error (exit 2), not a clean check.
	diskMust(t, os.WriteFile(db, before[:len(before)/2], 0o600))
	if code, _, errOut := diskCLI(t, "check", "--image", fx.orig, "--db", db); code != ExitError || !strings.Contains(errOut, "corrupt baseline") {
		t.Errorf("check with a truncated baseline: exit %d, %q", code, errOut)
	}
}

func TestDiskScan(t *testing.T) {
	fx := makeDiskFixture(t)
	img, _ := diskLayout(t, fx.orig, "gpt", "qcow2")
	rules := t.TempDir()
	diskMust(t, os.WriteFile(filepath.Join(rules, "test.yar"), []byte(diskTestRule+`
rule by_name { condition: filename == "passwd" and filepath == "/etc" and extension == "" }
rule by_ext { condition: extension == ".pyc" }
rule by_type { condition: filetype == "ELF" and filepath == "/usr/bin" }
`), 0o600))
	code, out, errOut := diskCLI(t, "scan-disk", "--image", img, "--rules", rules, "--json", "--max-file-size", "8000")
	if code != ExitFindings {
		t.Fatalf("scan-disk: exit %d\n%s%s", code, out, errOut)
	}
	var got []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := decodeFinding(t, sc.Bytes())
		if f.Detector != "yara-file" || f.Target.Source != img {
			t.Errorf("finding %+v", f)
		}
		got = append(got, f.Rule+" "+f.Path)
	}
	want := []string{
		"by_name /etc/passwd",
		"by_ext /usr/lib/python3/__pycache__/m.pyc",
		"by_type /usr/bin/elf",
		"planted_marker /usr/bin/ls",
	}
	sort.Strings(got)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("findings %v\nwant     %v", got, want)
	}
	var sum diskScanSummary
	diskMust(t, json.Unmarshal([]byte(errOut), &sum))
	// Larger than 8000 bytes: tool (8192), libx.so.1 and libx.so (9000, hard links).
	if !reflect.DeepEqual(sum.Skipped, []string{"/usr/bin/tool", "/usr/lib/libx.so", "/usr/lib/libx.so.1"}) {
		t.Errorf("skipped %v", sum.Skipped)
	}
	if sum.Scanned != int64(len(fx.tree.files))-2 || len(sum.Errors) != 0 {
		t.Errorf("summary %+v (tree has %d files)", sum, len(fx.tree.files))
	}
	// Without findings: exit 0.
	empty := t.TempDir()
	diskMust(t, os.WriteFile(filepath.Join(empty, "none.yar"), []byte("rule never { condition: false }\n"), 0o600))
	if code, out, errOut := diskCLI(t, "scan-disk", "--image", img, "--rules", empty); code != ExitClean {
		t.Errorf("scan-disk without matches: exit %d\n%s%s", code, out, errOut)
	}
}

// TestDiskUnreadableEntry clears one selected inode behind the filesystem's back: that
// path is reported with its read error alone, and the rest of the check goes on.
func TestDiskUnreadableEntry(t *testing.T) {
	fx := makeDiskFixture(t)
	db := filepath.Join(t.TempDir(), "base.db")
	if code, out, errOut := diskCLI(t, "baseline", "--image", fx.orig, "--db", db); code != ExitClean {
		t.Fatalf("baseline: %d\n%s%s", code, out, errOut)
	}
	broken := filepath.Join(t.TempDir(), "broken.ext4")
	b, err := os.ReadFile(fx.changed)
	diskMust(t, err)
	diskMust(t, os.WriteFile(broken, b, 0o600))
	ext4test.Debugfs(t, broken, "clri /etc/sudoers")
	code, out, errOut := diskCLI(t, "check", "--image", broken, "--db", db, "--json")
	if code != ExitFindings {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	changes, _ := parseCheckJSON(t, out)
	c := changes["/etc/sudoers"]
	if c.Kind != integrity.Changed || len(c.Attrs) != 1 || c.Attrs[0].Attr != "error" || c.Attrs[0].Before != "" || c.Attrs[0].After == "" {
		t.Errorf("/etc/sudoers: %+v, want only an error attribute", c)
	}
	if len(changes) != 12 { // the 11 changes of the fixture, and this one
		t.Errorf("%d changes, want 12: %v", len(changes), changes)
	}
}

// TestDiskGrowingLog: a log that only grew is not a change; one whose old content was
// rewritten is, even if it also grew.
func TestDiskGrowingLog(t *testing.T) {
	fx := makeDiskFixture(t)
	db := filepath.Join(t.TempDir(), "base.db")
	if code, out, errOut := diskCLI(t, "baseline", "--image", fx.orig, "--db", db); code != ExitClean {
		t.Fatalf("baseline: %d\n%s%s", code, out, errOut)
	}
	inodeBefore := ext4test.Inode(t, fx.orig, "/var/log/syslog")
	for _, tc := range []struct {
		name, content string
		wantSHA       bool
	}{
		{"appended", "boot\nmore lines\n", false},
		{"rewritten", "BOOT\nmore lines\n", true},
		{"truncated", "bo", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "img.ext4")
			b, err := os.ReadFile(fx.orig)
			diskMust(t, err)
			diskMust(t, os.WriteFile(img, b, 0o600))
			src := filepath.Join(dir, "syslog")
			diskMust(t, os.WriteFile(src, []byte(tc.content), 0o600))
			ext4test.Debugfs(t, img, "rm /var/log/syslog", "write "+src+" /var/log/syslog",
				"sif /var/log/syslog mode 0100640", "sif /var/log/syslog uid 0", "sif /var/log/syslog gid 0")
			ext4test.Fsck(t, img)
			code, out, errOut := diskCLI(t, "check", "--image", img, "--db", db, "--json")
			changes, _ := parseCheckJSON(t, out)
			var got []string
			for _, a := range changes["/var/log/syslog"].Attrs {
				got = append(got, a.Attr)
			}
			var want []string
			if tc.name == "truncated" {
				want = append(want, "size")
			}
			if inodeAfter := ext4test.Inode(t, img, "/var/log/syslog"); inodeAfter != inodeBefore {
				want = append(want, "inode")
			}
			if tc.wantSHA {
				want = append(want, "sha256")
			}
			wantChanges := 0 // nothing but syslog may be reported
			if len(want) > 0 {
				wantChanges = 1
			}
			if !reflect.DeepEqual(got, want) || len(changes) != wantChanges {
				t.Errorf("exit %d, syslog attrs %v, want %v; all changes %v\n%s", code, got, want, changes, errOut)
			}
		})
	}
}

func TestDiskUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"baseline", "--help"}, ExitClean, "Usage: domainm baseline"},
		{[]string{"check", "--help"}, ExitClean, "--update"},
		{[]string{"scan-disk", "--help"}, ExitClean, "filepath (the"},
		{[]string{"baseline", "--db", "x"}, ExitError, "--image is required"},
		{[]string{"baseline", "--image", "x"}, ExitError, "--db is required"},
		{[]string{"check", "--image", "x"}, ExitError, "--db is required"},
		{[]string{"scan-disk", "--image", "x"}, ExitError, "--rules is required"},
		{[]string{"baseline", "--image", "/nonexistent.img", "--db", "/nonexistent/db"}, ExitError, "opening image"},
		{[]string{"check", "--image", "x", "--db", "/nonexistent.db"}, ExitError, "opening baseline"},
	} {
		code, out, errOut := diskCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("%v: exit %d, want %d with %q\n%s%s", tc.args, code, tc.code, tc.want, out, errOut)
		}
	}
}

// TestDiskFormatPinned: the guest can write a qcow2 header into its raw disk; the check
// opens the image as the format recorded at baseline time instead of probing again.
func TestDiskFormatPinned(t *testing.T) {
	fx := makeDiskFixture(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "base.db")
	if code, out, errOut := diskCLI(t, "baseline", "--image", fx.orig, "--format", "raw", "--db", db); code != ExitClean {
		t.Fatalf("baseline: %d\n%s%s", code, out, errOut)
	}
	img := filepath.Join(dir, "forged.raw")
	b, err := os.ReadFile(fx.changed)
	diskMust(t, err)
	// ext4 leaves its first 1024 bytes alone: a qcow2 header there, naming a host file.
	hdr := make([]byte, 512)
	copy(hdr, "QFI\xfb\x00\x00\x00\x03")
	copy(hdr[8:], []byte{0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 11})
	copy(hdr[0x100:], "/etc/shadow")
	copy(b, hdr)
	diskMust(t, os.WriteFile(img, b, 0o600))
	code, out, errOut := diskCLI(t, "check", "--image", img, "--db", db, "--json")
	changes, _ := parseCheckJSON(t, out)
	if code != ExitFindings || len(changes) != 11 {
		t.Fatalf("check of the forged image (pinned raw): exit %d, %d changes, want 1 and 11\n%s", code, len(changes), errOut)
	}
	if code, _, errOut := diskCLI(t, "check", "--image", img, "--db", db, "--format", "qcow2"); code != ExitError {
		t.Errorf("check --format qcow2 of a raw image: exit %d, want %d\n%s", code, ExitError, errOut)
	}
	if code, _, errOut := diskCLI(t, "baseline", "--image", img, "--db", db, "--format", "vmdk"); code != ExitError || !strings.Contains(errOut, "--format must be raw or qcow2") {
		t.Errorf("--format vmdk: exit %d %q", code, errOut)
	}
}
