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
	f.Add([]byte(`global rule g { strings: $a = "x" condition: not $a } private rule p { strings: $b = "y" condition: #b >= 2 }
rule r { strings: $c = "z" condition: p and int16(uint32(0x3C) + 0x5c) == 0x0001 and $c and uint8(@c[1] + 2) == 1 and filesize < 1MB }`))
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
		// The screen's reading (MemoryScanner.Screen): reads have a width, and what is
		// sensitive is a rule of the source.
		if roots, ok := screenRoots(toks); ok {
			for _, r := range roots {
				if r.width != 1 && r.width != 2 && r.width != 4 {
					t.Fatalf("read at %#x of %d bytes", r.addr, r.width)
				}
			}
		} else if roots != nil {
			t.Fatalf("not screenable, yet %d roots", len(roots))
		}
		conds := conditions(toks)
		names := map[string]bool{}
		for _, c := range conds {
			names[c.name] = true
		}
		sens, _ := sensitiveRules(conds)
		for n := range sens {
			if !names[n] {
				t.Fatalf("sensitive rule %q is not a rule of the source", n)
			}
		}
	})
}
