package yara

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeRules(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCompileNamespacesAndScan(t *testing.T) {
	dir := writeRules(t, map[string]string{
		"a.yar":         `rule alpha : tagx { meta: severity = "high" strings: $s = "ALPHA-MARK" condition: $s }`,
		"sub/b.yara":    `rule beta { strings: $s = { DE AD BE EF } condition: $s and filename == "" }`,
		"notes.txt":     `this is not a rule`,
		".hidden/c.yar": `rule broken {`,
		"sub/.swp.yar":  `rule broken2 {`,
	})
	r, err := Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Files(), ","); got != "a.yar,sub/b.yara" {
		t.Fatalf("files = %s", got)
	}
	if r.Count() != 2 {
		t.Fatalf("count = %d", r.Count())
	}
	s, err := r.NewScanner(0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buf := make([]byte, 4096)
	copy(buf[100:], "ALPHA-MARK")
	copy(buf[4000:], []byte{0xde, 0xad, 0xbe, 0xef})
	ms, err := s.Scan(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, m := range ms {
		got[m.Namespace+":"+m.Rule] = m.Strings[0].Offset
		if m.Rule == "alpha" && (m.Meta["severity"] != "high" || m.Tags[0] != "tagx" || m.Strings[0].Text != "ALPHA-MARK") {
			t.Errorf("alpha match = %+v", m)
		}
	}
	if got["a:alpha"] != 100 || got["sub/b:beta"] != 4000 || len(got) != 2 {
		t.Fatalf("matches = %v", got)
	}
}

func TestCompileErrorsNameFileAndLine(t *testing.T) {
	dir := writeRules(t, map[string]string{
		"good.yar": "rule ok { condition: true }\n",
		"bad1.yar": "rule x {\n  strings:\n    $a = \"x\"\n  condition:\n    $b\n}\n",
		"bad2.yar": "\n\nrule y { condition: nosuchthing }\n",
	})
	_, err := Compile(dir)
	var ce *CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	if len(ce.Errors) != 2 {
		t.Fatalf("errors = %v", ce.Errors)
	}
	if e := ce.Errors[0]; e.File != "bad1.yar" || e.Line != 6 { // libyara reports the end of the condition
		t.Errorf("first error = %+v", e)
	}
	if e := ce.Errors[1]; e.File != "bad2.yar" || e.Line != 3 {
		t.Errorf("second error = %+v", e)
	}
	if !strings.Contains(err.Error(), "bad1.yar:6:") {
		t.Errorf("message %q lacks file:line", err)
	}
}

func TestEmptyFolder(t *testing.T) {
	r, err := Compile(t.TempDir())
	if !errors.Is(err, ErrNoRules) || r == nil || r.Count() != 0 {
		t.Fatalf("r=%v err=%v", r, err)
	}
}

func TestIDChangesWithContent(t *testing.T) {
	dir := writeRules(t, map[string]string{"a.yar": "rule a { condition: true }"})
	r1, _ := Compile(dir)
	r2, _ := Compile(dir)
	os.WriteFile(filepath.Join(dir, "a.yar"), []byte("rule a { condition: false }"), 0o644)
	r3, _ := Compile(dir)
	if r1.ID() != r2.ID() || r1.ID() == r3.ID() {
		t.Fatalf("ids %s %s %s", r1.ID(), r2.ID(), r3.ID())
	}
}

func TestSymlinkedFolder(t *testing.T) {
	dir := writeRules(t, map[string]string{"a.yar": "rule a { condition: true }"})
	link := filepath.Join(t.TempDir(), "current")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	r, err := Compile(link)
	if err != nil || r.Count() != 1 {
		t.Fatalf("r=%v err=%v", r, err)
	}
}
