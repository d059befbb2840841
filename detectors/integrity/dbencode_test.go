package integrity

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan/ext4test"
)

// TestAppendRecordMatchesEncodingJSON: the baseline line appendRecord writes is byte for
// byte the one encoding/json wrote before it, for every record of a real ext4 image
// (mkfs.ext4 -d, then debugfs) with names and link targets that need escaping (HTML
// characters, quotes, control characters, U+2028, invalid UTF-8), xattrs, times before
// 1970 and sha256+sha512, and for records made by hand (errors, growing, odd times).
func TestAppendRecordMatchesEncodingJSON(t *testing.T) {
	dir := t.TempDir()
	names := []string{"plain", "a<b>&c", "amp&only", `quo"te`, `back\slash`, "tab\tname", "uni-é-日本", "sep\u2028x", "del\x7f", "bad\xff\xfe", "ctl\x01"}
	for _, n := range names {
		ext4test.WriteFile(t, dir, filepath.Join("d", n), []byte("content of "+n), 0o644)
	}
	ext4test.WriteFile(t, dir, "bin/su", []byte("setuid"), 0o4755)
	for _, l := range []struct{ name, target string }{{"ln1", "../d/a<b>&c"}, {"ln2", "bad\xff"}, {"ln3", "uni-é"}} {
		if err := os.Symlink(l.target, filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(t.TempDir(), "fs.ext4")
	ext4test.Mkfs(t, img, dir, 16, "-b", "4096", "-I", "256")
	ext4test.Debugfs(t, img,
		"ea_set /bin/su security.capability 0100000200200000000000000000000000000000",
		"ea_set /d/plain user.note hello",
		"sif /d/plain mtime 19600101000000",
		"sif /bin/su ctime 20380119031408")
	p, err := ParsePolicy("t.toml", []byte(`version = 1
[[select]]
name = "all"
paths = ["/"]
attrs = ["content", "xattrs", "nlink", "sha512"]
`))
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := collectImage(t, img, p, nil)
	if len(recs) < len(names)+5 {
		t.Fatalf("%d records from the image", len(recs))
	}
	var fast, xattrs int
	for _, r := range recs {
		if len(r.Xattrs) > 0 {
			xattrs++
		} else if r.PathRaw == nil && r.LinkRaw == nil {
			fast++
		}
	}
	if fast < len(names) || xattrs < 2 {
		t.Fatalf("the image gave %d records for the hand-written path and %d with xattrs", fast, xattrs)
	}
	mtime := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	recs = append(recs,
		&Record{Path: "/e", Rule: "r", Err: "reading: <bad> \"block\"\n", Mtime: mtime("0001-01-01T00:00:00Z")},
		&Record{Path: "/g", Rule: setuidName(), Attrs: AttrSet(0), Growing: true, Type: "regular", Size: -1,
			Mtime: mtime("1901-12-13T20:45:52.000000001Z"), Ctime: mtime("2446-05-10T22:38:55.999999999Z"),
			Hashes: Hashes{SHA512: "ab"}},
		&Record{Path: "/tz", Mtime: time.Date(2020, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))},
		&Record{Path: "/y", Mtime: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, // an error either way
	)
	for _, r := range recs {
		want, werr := json.Marshal(r)
		got, gerr := appendRecord([]byte("prefix"), r)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("%q: appendRecord error %v, encoding/json %v", r.Path, gerr, werr)
		}
		if werr != nil {
			continue
		}
		if want = append([]byte("prefix"), append(want, '\n')...); !bytes.Equal(got, want) {
			t.Errorf("%q:\n got %s\nwant %s", r.Path, got, want)
		}
	}
	back := roundTrip(t, p, recs[:len(recs)-1])
	for i, r := range back {
		if r.Path != recs[i].Path || r.Hashes != recs[i].Hashes || !r.Mtime.Equal(recs[i].Mtime) || r.Link != recs[i].Link {
			t.Errorf("read back %+v, wrote %+v", r, recs[i])
		}
	}
}

func setuidName() string { return SetuidRule }
