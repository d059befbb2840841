package integrity

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"
)

func writeDB(t *testing.T, path string, n int) Header {
	t.Helper()
	p := mustPolicy(t, testPolicy)
	h := NewHeader(p, ImageInfo{Path: "/img.raw", Size: 1 << 20, Partition: -1}, t0)
	w, err := CreateDB(path, h)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := w.Add(fileRec(fmt.Sprintf("/bin/f%05d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(Stats{Records: int64(n)}); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestDBRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "base.db")
	h := writeDB(t, path, 3)
	gh, recs, tr, err := ReadDB(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gh, h) {
		t.Errorf("header = %+v\nwant     %+v", gh, h)
	}
	if len(recs) != 3 || tr.Records != 3 || tr.Stats.Records != 3 {
		t.Fatalf("read %d records, trailer %+v", len(recs), tr)
	}
	if want := fileRec("/bin/f00001"); !reflect.DeepEqual(recs[1], want) {
		t.Errorf("record = %+v\nwant     %+v", recs[1], want)
	}
	if _, err := ParsePolicy(gh.PolicyFile, []byte(gh.Policy)); err != nil {
		t.Errorf("stored policy does not parse: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("baseline mode %v, %v; want 0600", st.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestDBCorruption(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "base.db")
	writeDB(t, path, 50)
	zb, _ := os.ReadFile(path)
	zr, _ := gzip.NewReader(bytes.NewReader(zb))
	plain, _ := io.ReadAll(zr)
	rezip := func(b []byte) []byte {
		var out bytes.Buffer
		zw := gzip.NewWriter(&out)
		zw.Write(b)
		zw.Close()
		return out.Bytes()
	}
	lines := bytes.SplitAfter(plain, []byte("\n"))
	for name, data := range map[string][]byte{
		"truncated gzip":       zb[:len(zb)/2],
		"no trailer":           rezip(bytes.Join(lines[:len(lines)-2], nil)),
		"record dropped":       rezip(append(append([]byte{}, bytes.Join(lines[:3], nil)...), bytes.Join(lines[4:], nil)...)),
		"record altered":       rezip(bytes.Replace(plain, []byte(`"/bin/f00007"`), []byte(`"/bin/f00008"`), 1)),
		"not gzip":             plain,
		"data after trailer":   rezip(append(append([]byte{}, plain...), lines[1]...)),
		"wrong format":         rezip(bytes.Replace(plain, []byte(DBFormat), []byte("other"), 1)),
		"future version":       rezip(bytes.Replace(plain, []byte(`"version":1`), []byte(`"version":9`), 1)),
		"empty":                nil,
		"flipped gzip payload": flip(zb, len(zb)/2),
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, "bad.db")
			os.WriteFile(p, data, 0o600)
			_, recs, _, err := ReadDB(p)
			if !errors.Is(err, ErrCorruptDB) {
				t.Errorf("ReadDB = %d records, %v; want ErrCorruptDB", len(recs), err)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte{}, b...)
	c[i] ^= 0xff
	return c
}

func TestDBAbortKeepsOld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "base.db")
	writeDB(t, path, 5)
	w, err := CreateDB(path, NewHeader(mustPolicy(t, testPolicy), ImageInfo{}, t0))
	if err != nil {
		t.Fatal(err)
	}
	w.Add(fileRec("/new"))
	w.Abort()
	if _, recs, _, err := ReadDB(path); err != nil || len(recs) != 5 {
		t.Fatalf("after abort: %d records, %v; want the old 5", len(recs), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestDBRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, ".base.db.tmp-123")
	fresh := filepath.Join(dir, ".base.db.tmp-456")
	other := filepath.Join(dir, ".other.db.tmp-789")
	for _, p := range []string{stale, fresh, other} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTemp)
	os.Chtimes(stale, old, old)
	os.Chtimes(other, old, old)
	writeDB(t, filepath.Join(dir, "base.db"), 1)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary baseline kept: %v", err)
	}
	for _, p := range []string{fresh, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}

func TestDBFailedCommitKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "base.db")
	writeDB(t, path, 5)
	w, err := CreateDB(path, NewHeader(mustPolicy(t, testPolicy), ImageInfo{}, t0))
	if err != nil {
		t.Fatal(err)
	}
	w.Add(fileRec("/new"))
	w.f.Close() // the disk goes away under the writer: flush and sync fail
	if err := w.Commit(Stats{}); err == nil {
		t.Fatal("Commit on a closed file succeeded")
	}
	if _, recs, _, err := ReadDB(path); err != nil || len(recs) != 5 {
		t.Fatalf("after failed commit: %d records, %v; want the old 5", len(recs), err)
	}
}

// TestDBKilledMidWrite kills a process (this test binary, re-run as a helper) in the
// middle of writing a new baseline: the old one must stay complete.
func TestDBKilledMidWrite(t *testing.T) {
	if os.Getenv("DOMAINM_DB_HELPER") != "" {
		return
	}
	path := filepath.Join(t.TempDir(), "base.db")
	writeDB(t, path, 5)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDBHelperWriteAndDie$", "-test.v")
	cmd.Env = append(os.Environ(), "DOMAINM_DB_HELPER="+path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die by SIGKILL: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("wrote 20000 records")) {
		t.Fatalf("helper did not get to write: %s", out)
	}
	if _, recs, _, err := ReadDB(path); err != nil || len(recs) != 5 {
		t.Fatalf("after kill: %d records, %v; want the old 5", len(recs), err)
	}
}

func TestDBHelperWriteAndDie(t *testing.T) {
	path := os.Getenv("DOMAINM_DB_HELPER")
	if path == "" {
		t.Skip("helper process for TestDBKilledMidWrite")
	}
	w, err := CreateDB(path, NewHeader(mustPolicy(t, testPolicy), ImageInfo{}, t0))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20000 {
		w.Add(fileRec(fmt.Sprintf("/x/%d", i)))
	}
	w.bw.Flush()
	fmt.Println("wrote 20000 records")
	os.Stdout.Sync()
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// TestDBKeepsNonUTF8Names: guest names are bytes; a name that is not UTF-8 must come
// back from the baseline byte for byte, or every check would report it removed and added.
func TestDBKeepsNonUTF8Names(t *testing.T) {
	path := filepath.Join(t.TempDir(), "base.db")
	w, err := CreateDB(path, NewHeader(mustPolicy(t, testPolicy), ImageInfo{}, t0))
	if err != nil {
		t.Fatal(err)
	}
	e := fileRec("/etc/bad\xff\nname")
	e.Type, e.Link = "symlink", "/tmp/\xfe"
	e.Xattrs = Xattrs{"user.\xfd": []byte{1}, capXattr: []byte{0, 0, 0, 2}}
	e.setRaw()
	diskOK := fileRec("/etc/ok-é")
	diskOK.setRaw()
	for _, r := range []*Record{e, diskOK} {
		if err := w.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(Stats{}); err != nil {
		t.Fatal(err)
	}
	_, recs, _, err := ReadDB(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recs[0].Xattrs, e.Xattrs) {
		t.Errorf("xattrs read back %q, want %q", recs[0].Xattrs, e.Xattrs)
	}
	if recs[0].Path != e.Path || recs[0].Link != e.Link {
		t.Errorf("read back %q -> %q, want %q -> %q", recs[0].Path, recs[0].Link, e.Path, e.Link)
	}
	if recs[1].Path != "/etc/ok-é" || recs[1].PathRaw != nil {
		t.Errorf("valid UTF-8 name: %q raw %q", recs[1].Path, recs[1].PathRaw)
	}
	c := NewComparer(recs)
	if ch := c.Add(e); ch != nil {
		t.Errorf("same record compared as %+v", ch)
	}
}
