package yara

import (
	"bytes"
	"reflect"
	"testing"
)

// TestWindowPathsAgree checks that the C window path finds what go-yara's ScanMemBlocks
// path finds, with the same addresses, metas, tags, cut and memory semantics.
func TestWindowPathsAgree(t *testing.T) {
	if !goyaraScannerOK {
		t.Fatal("go-yara's Scanner layout changed: the C window path is off")
	}
	dir := writeRules(t, map[string]string{"a.yar": `
rule lit : t1 t2 { meta: s = "str" i = -42 b = true f = false strings: $a = "MARK-ONE" $b = "MARK-TWO" wide condition: any of them }
rule at_addr { strings: $a = "MARK-ONE" condition: $a at 0x10000100 }
rule mz { condition: uint16(0x10000000) == 0x5A4D }
rule mz0 { condition: uint16(0) == 0x5A4D }
rule small { condition: filesize < 1MB }
rule many { strings: $z = "ZZ" condition: #z > 3 }
private rule priv { strings: $p = "MARK-ONE" condition: $p }
rule uses_priv { condition: priv }
rule hidden_str { strings: $a = "MARK-TWO" wide private $b = "MARK-ONE" condition: all of them }
`})
	r, err := Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	copy(buf, "MZ")
	copy(buf[0x100:], "MARK-ONE")
	copy(buf[0x300:], []byte("M\x00A\x00R\x00K\x00-\x00T\x00W\x00O\x00"))
	copy(buf[0x1000:], bytes.Repeat([]byte("Z"), 600))
	s, err := r.NewMemoryScanner(0, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 2 { // the second round reuses the scanner
		c, err := s.Scan(buf, 0x10000000)
		if err != nil {
			t.Fatal(err)
		}
		g, err := s.scanGo(buf, 0x10000000)
		if err != nil {
			t.Fatal(err)
		}
		for i := range g {
			g[i].Window = s.window[[2]string{g[i].Namespace, g[i].Rule}]
		}
		if !reflect.DeepEqual(c, g) {
			t.Fatalf("C path:\n%+v\ngo-yara path:\n%+v", c, g)
		}
		names := map[string]bool{}
		for _, m := range c {
			names[m.Rule] = true
		}
		for _, want := range []string{"lit", "at_addr", "mz", "many", "uses_priv", "hidden_str"} {
			if !names[want] {
				t.Errorf("%s not matched: %v", want, names)
			}
		}
		for _, no := range []string{"mz0", "small", "priv"} {
			if names[no] {
				t.Errorf("%s matched", no)
			}
		}
	}
}
