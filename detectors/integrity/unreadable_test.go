package integrity

import (
	"bytes"
	"math/rand"
	"os"
	"testing"

	"github.com/domainm/domainm/diskscan/ext4test"
)

// TestCheckUnchangedUnreadable: an image checked right after its baseline reports no
// change, even where the guest's metadata is damaged, and again after the check's records
// became the baseline (check --update). An entry the walk meets and then fails to read
// further (a directory whose blocks are corrupt, a directory reached a second time) is
// one record holding both its attributes and the error.
func TestCheckUnchangedUnreadable(t *testing.T) {
	files := map[string]string{
		"etc/passwd": "root:x:0:0::/root:/bin/sh\n", "etc/cron.d/a": "a\n", "etc/cron.d/b": "b\n",
		"usr/bin/x": "x\n", "d/xx": "first\n", "d/xy": "second\n", "zz/last": "z\n",
	}
	cases := []struct {
		name    string
		opts    []string
		damage  func(t *testing.T, img string)
		errPath string // a directory recorded with attributes and an error
	}{
		{"corrupt directory block", nil, func(t *testing.T, img string) {
			junk := make([]byte, 4096)
			rand.New(rand.NewSource(1)).Read(junk)
			ext4test.Overwrite(t, img, "/etc/cron.d", junk)
		}, "/etc/cron.d"},
		{"directory reached twice", nil, func(t *testing.T, img string) {
			ext4test.Debugfs(t, img, "ln /etc/cron.d /usr/cron2")
		}, "/usr/cron2"},
		{"two entries with one name", []string{"-O", "^metadata_csum"}, func(t *testing.T, img string) {
			blk := ext4test.FirstBlock(t, img, "/d") * 4096
			b := make([]byte, 4096)
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.ReadAt(b, blk); err != nil {
				t.Fatal(err)
			}
			i := bytes.Index(b, []byte("xy"))
			if i < 0 {
				t.Fatal("entry xy not in /d's first block")
			}
			ext4test.Patch(t, img, blk+int64(i), []byte("xx"))
		}, ""},
	}
	p := mustPolicy(t, allPolicy)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := ext4test.Image(t, files, 8, tc.opts...)
			tc.damage(t, img)
			recs, _ := collectImage(t, img, p, nil)
			if tc.errPath != "" {
				var got []*Record
				for _, r := range recs {
					if r.Path == tc.errPath {
						got = append(got, r)
					}
				}
				if len(got) != 1 || got[0].Err == "" || got[0].Inode == 0 || got[0].Type != "dir" {
					for _, r := range got {
						t.Logf("record %s: type %q inode %d err %q", r.Path, r.Type, r.Inode, r.Err)
					}
					t.Errorf("%s: %d records, want one directory record with its inode and an error", tc.errPath, len(got))
				}
			}
			base := roundTrip(t, p, recs)
			for round, what := range []string{"after baseline", "after update"} {
				again, changes := collectImage(t, img, p, NewComparer(base))
				for _, c := range changes {
					t.Errorf("%s: %s %s %+v", what, c.Kind, c.Path, c.Attrs)
				}
				if round == 0 {
					base = roundTrip(t, p, again)
				}
			}
			if recs[len(recs)-1].Path != "/zz/last" {
				t.Errorf("walk stopped early: last record %s", recs[len(recs)-1].Path)
			}
		})
	}
}
