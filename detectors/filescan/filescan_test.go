package filescan

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/diskscan"
	"github.com/domainm/domainm/diskscan/ext4test"
)

// image builds a raw ext4 image (mkfs.ext4 -d) of files, each owned by its uid.
func image(t *testing.T, files map[string]string, uids map[string]int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the files their owners before mkfs.ext4 -d copies them")
	}
	tree := ext4test.WriteTree(t, files)
	for p := range files {
		if err := os.Chown(filepath.Join(tree, p), uids[p], uids[p]); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	ext4test.Mkfs(t, img, tree, 8, "-b", "4096")
	return img
}

func compile(t *testing.T, src string) *yara.Rules {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "t.yar"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := yara.Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestExternals: the Loki/THOR externals md5 and owner are set for file scans, owner
// by the guest's /etc/passwd on the same image, else the uid in decimal; filename,
// filepath, extension and filetype as before.
func TestExternals(t *testing.T) {
	payload := "#!/bin/sh\necho MARKER\n"
	sum := md5.Sum([]byte(payload))
	files := map[string]string{
		"etc/passwd":        "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nalice:x:1000:1000::/home/alice:/bin/sh\ntoor:x:0:0::/:/bin/sh\n",
		"usr/bin/root.sh":   payload,
		"home/alice/a.SH":   payload,
		"tmp/orphan":        payload,
		"tmp/other-content": "MARKER but other bytes\n",
	}
	uids := map[string]int{"home/alice/a.SH": 1000, "tmp/orphan": 4242}
	rules := compile(t, `
rule OwnedByRoot { strings: $a = "MARKER" condition: $a and owner == "root" }
rule OwnedByAlice { condition: owner == "alice" and filename == "a.SH" and filepath == "/home/alice" and extension == ".sh" and filetype == "SCRIPT" }
rule OwnedByUnknown { condition: owner == "4242" }
rule ByMD5 { condition: md5 == "`+hex.EncodeToString(sum[:])+`" }
`)
	fsys, closer, err := diskscan.OpenVolumeFormat(image(t, files, uids), "raw", -1)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	sc := &Scanner{FS: fsys, Rules: rules, MaxSize: DefaultMaxSize, Workers: 2}
	if _, err := sc.ScanAll(context.Background(), fsys); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, f := range sc.Result().Findings {
		if f.Detector != Detector {
			t.Errorf("detector %q", f.Detector)
		}
		got[f.Rule] = append(got[f.Rule], f.Path)
	}
	want := map[string]string{
		"OwnedByRoot":    "/tmp/other-content /usr/bin/root.sh",
		"OwnedByAlice":   "/home/alice/a.SH",
		"OwnedByUnknown": "/tmp/orphan",
		"ByMD5":          "/home/alice/a.SH /tmp/orphan /usr/bin/root.sh",
	}
	for rule, paths := range want {
		if g := strings.Join(got[rule], " "); g != paths {
			t.Errorf("%s matched %q, want %q", rule, g, paths)
		}
	}
	if len(sc.Result().Errors) != 0 {
		t.Errorf("errors: %+v", sc.Result().Errors)
	}
}

// TestOwnerWithoutPasswd: with no /etc/passwd on the image every owner is its uid.
func TestOwnerWithoutPasswd(t *testing.T) {
	rules := compile(t, `rule Root { condition: owner == "root" } rule Zero { condition: owner == "0" }`)
	fsys, closer, err := diskscan.OpenVolumeFormat(image(t, map[string]string{"x": "data"}, nil), "raw", -1)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	sc := &Scanner{FS: fsys, Rules: rules, MaxSize: DefaultMaxSize}
	if _, err := sc.ScanAll(context.Background(), fsys); err != nil {
		t.Fatal(err)
	}
	fs := sc.Result().Findings
	if len(fs) != 1 || fs[0].Rule != "Zero" || fs[0].Path != "/x" {
		t.Errorf("findings %+v, want Zero on /x only", fs)
	}
}

func TestParsePasswd(t *testing.T) {
	long := strings.Repeat("x", 100<<10)
	m := parsePasswd(strings.NewReader("a:x:1:1::/:/bin/sh\nb:x:1:1::/:/bin/sh\n:x:2:2::/:\nc:x:-1:0::/:\nd:x:99999999999:0::/:\ne:x:3\nf:x:4:4\n" + long + "\ng:x:5:5:\n"))
	if len(m) != 2 || m[1] != "a" || m[4] != "f" {
		t.Errorf("parsePasswd = %v, want 1:a 4:f (a line over 64 KiB ends the read)", m)
	}
}
