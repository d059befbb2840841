package integrity

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/domainm/domainm/rules/policy"
)

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(testPolicy))
	f.Add(policy.Default)
	f.Add([]byte("version = 1\n[[select]]\npaths = [\"/a/*/b[\"]\nattrs = [\"x\"]\n"))
	f.Add([]byte("version = 1\n[groups]\na = [\"b\"]\nb = [\"a\"]\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := ParsePolicy("f.toml", src)
		if (p == nil) == (err == nil) {
			t.Fatalf("policy %v and error %v", p, err)
		}
		if err != nil {
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a *PolicyError", err, err)
			}
			if pe.Line < 0 || pe.Line > bytes.Count(src, []byte("\n"))+1 {
				t.Fatalf("line %d outside the file: %v", pe.Line, err)
			}
			return
		}
		for _, path := range []string{"/", "/etc/passwd", "/home/a/.ssh/x", "/a/b/c/d"} {
			p.Select(path)
			p.descend(splitPath(path))
		}
	})
}

func FuzzReadDB(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.db")
	p, err := ParsePolicy("seed.toml", []byte(testPolicy))
	if err != nil {
		f.Fatal(err)
	}
	w, err := CreateDB(path, NewHeader(p, ImageInfo{Path: "/i"}, t0))
	if err != nil {
		f.Fatal(err)
	}
	w.Add(fileRec("/a"))
	w.Add(fileRec("/b\xff"))
	w.Commit(Stats{})
	seed, _ := os.ReadFile(path)
	f.Add(seed)
	zr, _ := gzip.NewReader(bytes.NewReader(seed))
	var plain bytes.Buffer
	plain.ReadFrom(zr)
	f.Add(plain.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		// The gzip layer is the standard library's; fuzz both it and the JSON lines.
		_, _, _, gzErr := readDB("fuzz.db", bytes.NewReader(data))
		if gzErr == nil && !bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
			t.Fatalf("accepted a baseline that is not gzip")
		}
		h, recs, tr, err := readLines("fuzz.db", bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCorruptDB) {
				t.Fatalf("error is not ErrCorruptDB: %v", err)
			}
			return
		}
		if h.Format != DBFormat || h.Version != DBVersion || tr.Records != int64(len(recs)) {
			t.Fatalf("accepted header %+v trailer %+v with %d records", h, tr, len(recs))
		}
		for _, r := range recs {
			FormatCaps(r.Xattrs[capXattr])
			Diff(r, r)
		}
	})
}
