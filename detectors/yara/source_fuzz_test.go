package yara

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzRuleSource: the source reader never panics, its tokens' lines never go backwards,
// and every flagged rule names a line within the source.
func FuzzRuleSource(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "rules", "yara", "*.yar"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`include "a.yar" rule r { strings: $a = { 4D 5A ?? [2-4] } $b = /x\/y/i condition: uint16(0) == 0x5A4D and @a[1] < 0x40 and #b > 2 and filesize < 1MB }`))
	f.Add([]byte("rule x { condition: \"unterminated"))
	f.Fuzz(func(t *testing.T, src []byte) {
		toks := lex(src)
		lines := 1
		for _, c := range src {
			if c == '\n' {
				lines++
			}
		}
		last := 1
		for _, tk := range toks {
			if tk.line < last || tk.line > lines {
				t.Fatalf("token %q at line %d after line %d (source has %d)", tk.text, tk.line, last, lines)
			}
			last = tk.line
		}
		for _, w := range windowRules("f.yar", toks) {
			if w.Line < 1 || w.Line > lines || len(w.Reasons) == 0 {
				t.Fatalf("window rule %+v", w)
			}
		}
		includes(toks)
	})
}
