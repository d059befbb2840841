package yara

import (
	"bytes"
	"reflect"
	"syscall"
	"testing"
	"time"
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

// BenchmarkScanMemoryGoIterator is the memory scan through go-yara's ScanMemBlocks with a
// Go iterator (the path before memwindow.c), to compare with BenchmarkScanMemory (the C
// iterator) and BenchmarkScanFile (plain ScanMem, file semantics).
func BenchmarkScanMemoryGoIterator(b *testing.B) {
	r, buf := benchRules(b), benchWindow()
	s, _ := r.NewMemoryScanner(0, 0)
	defer s.Close()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := s.scanGo(buf, 0x40000); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWindowPathsCPU scans one window in turn with plain ScanMem (file semantics),
// go-yara's ScanMemBlocks with a Go iterator and the C iterator, and reports each path's
// process CPU time per window (getrusage), which a loaded machine disturbs less than
// wall time. DOMAINM_BENCH_RULES selects the rules (e.g. signature-base).
func BenchmarkWindowPathsCPU(b *testing.B) {
	r, buf := benchRules(b), benchWindow()
	fs, _ := r.NewScanner(0)
	defer fs.Close()
	ms, _ := r.NewMemoryScanner(0, 0)
	defer ms.Close()
	paths := []struct {
		name string
		scan func() error
	}{
		{"scanmem", func() error { _, err := fs.Scan(buf); return err }},
		{"goiter", func() error { _, err := ms.scanGo(buf, 0x40000); return err }},
		{"citer", func() error { _, err := ms.Scan(buf, 0x40000); return err }},
	}
	cpu := make([]time.Duration, len(paths))
	n := 0
	for b.Loop() {
		for i, p := range paths {
			c0 := processCPU()
			if err := p.scan(); err != nil {
				b.Fatal(err)
			}
			cpu[i] += processCPU() - c0
		}
		n++
	}
	for i, p := range paths {
		b.ReportMetric(float64(cpu[i].Microseconds())/float64(n), p.name+"-cpu-us/window")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
