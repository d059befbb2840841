package integrity

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/domainm/domainm/diskscan"
)

// decodeRecordLines are baseline record lines as DBWriter writes them, and some it does
// not, each with whether decodeRecord must decode it itself (the rest fall back to
// encoding/json).
func decodeRecordLines(t testing.TB) []struct {
	line []byte
	fast bool
} {
	type line = struct {
		line []byte
		fast bool
	}
	enc := func(r *Record) []byte {
		var b bytes.Buffer
		if err := json.NewEncoder(&b).Encode(r); err != nil {
			t.Fatal(err)
		}
		return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	}
	var out []line
	plain := fileRec("/usr/bin/ls")
	plain.Hashes = Hashes{SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
	plain.Mtime = time.Date(2026, 11, 30, 9, 0, 1, 123456789, time.UTC)
	plain.Size, plain.Inode, plain.UID, plain.GID, plain.Nlink = 1<<40+3, 1<<33, 4294967295, 1000, 2
	out = append(out, line{enc(plain), true})
	both := fileRec("/opt/ü/日本")
	both.Attrs |= AttrSet(AttrSHA512)
	both.Hashes.SHA512 = "ee"
	both.Growing = true
	out = append(out, line{enc(both), true})
	link := newRecord(&diskscan.Entry{Path: "/lib", Type: diskscan.Symlink, Mode: 0o777, Mtime: t0, Ctime: t0, Inode: 7, Nlink: 1,
		LinkTarget: "usr/lib"}, "all", AttrSet(AttrLink), false)
	out = append(out, line{enc(link), true})
	dir := newRecord(&diskscan.Entry{Path: "/", Type: diskscan.Dir, Mode: 0o755, Inode: 2, Nlink: 20}, "all", 0, false)
	out = append(out, line{enc(dir), true})
	for _, typ := range []diskscan.FileType{diskscan.CharDev, diskscan.BlockDev, diskscan.FIFO, diskscan.Socket} {
		r := newRecord(&diskscan.Entry{Path: "/dev/x", Type: typ, Inode: 9}, "all", AttrSet(AttrMode), false)
		out = append(out, line{enc(r), true})
	}
	// Escapes, raw bytes, xattrs and errors go through encoding/json.
	quoted := fileRec(`/a "b" \c <d>`)
	out = append(out, line{enc(quoted), false})
	out = append(out, line{enc(fileRec("/b\xff")), false})
	caps := fileRec("/usr/bin/ping")
	caps.Xattrs = Xattrs{capXattr: {1, 2, 3}}
	out = append(out, line{enc(caps), false})
	bad := fileRec("/unreadable")
	bad.Err = "reading at offset 0: checksum"
	out = append(out, line{enc(bad), false})
	// Lines DBWriter never writes: json.Unmarshal decides (accepts or rejects) them.
	for _, s := range []string{
		`{}`, ` { "path" : "/x" , "size" : 0 } `, `{"Path":"/x"}`, `{"path":"/x","other":1}`,
		`{"size":01}`, `{"size":-1}`, `{"size":1e3}`, `{"size":1.5}`, `{"uid":4294967296}`,
		`{"inode":18446744073709551615}`, `{"inode":18446744073709551616}`, `{"path":null}`,
		`{"growing":true}`, `{"growing":truex}`, `{"attrs":[]}`, `{"attrs":["nosuch"]}`,
		`{"hashes":{}}`, `{"hashes":{"md5":"x"}}`, `{"mtime":"2026-13-01T00:00:00Z"}`,
		`{"mtime":"2026-01-01T00:00:00+02:00"}`, `{"path":"/x"} x`, `{"path":"/x",}`, `{"path":"/x"`,
		`{"path":"a` + "\t" + `b"}`, `{"path":"/x","path":"/y"}`, `{"hashes":{"sha256":"a"},"hashes":{"sha512":"b"}}`,
	} {
		out = append(out, line{[]byte(s), false})
	}
	return out
}

// TestDecodeRecord: every line decodeRecord takes gives the Record encoding/json gives,
// and the lines DBWriter writes for ordinary files are taken.
func TestDecodeRecord(t *testing.T) {
	for _, tc := range decodeRecordLines(t) {
		var fast Record
		ok := decodeRecord(tc.line, &fast)
		if tc.fast && !ok {
			t.Errorf("%s: not decoded by decodeRecord", tc.line)
		}
		checkDecodeRecord(t, tc.line, ok, &fast)
	}
}

func checkDecodeRecord(t *testing.T, line []byte, ok bool, fast *Record) {
	t.Helper()
	if !ok {
		return
	}
	var slow Record
	if err := json.Unmarshal(line, &slow); err != nil {
		t.Fatalf("%q: decodeRecord accepted what encoding/json rejects: %v", line, err)
	}
	if !reflect.DeepEqual(*fast, slow) {
		t.Fatalf("%q:\ndecodeRecord %+v\nencoding/json %+v", line, *fast, slow)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, tc := range decodeRecordLines(f) {
		f.Add(tc.line)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var r Record
		checkDecodeRecord(t, line, decodeRecord(line, &r), &r)
		// Whatever record a line decodes to, the baseline writer writes it as
		// encoding/json would (appendRecord, dbencode.go).
		var any Record
		if json.Unmarshal(line, &any) != nil {
			return
		}
		want, werr := json.Marshal(&any)
		got, gerr := appendRecord(nil, &any)
		if (werr != nil) != (gerr != nil) || werr == nil && !bytes.Equal(got, append(want, '\n')) {
			t.Fatalf("%q: appendRecord %q (%v), encoding/json %q (%v)", line, got, gerr, want, werr)
		}
	})
}
