package yara

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// window is a 260 KiB memory window: random bytes with text from the rule files.
func benchWindow() []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 260<<10)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	return buf
}

func benchRules(b *testing.B) *Rules {
	_, file, _, _ := runtime.Caller(0)
	r, err := Compile(filepath.Join(filepath.Dir(file), "..", "..", "rules", "yara"))
	if err != nil {
		b.Fatal(err)
	}
	if dir := os.Getenv("DOMAINM_BENCH_RULES"); dir != "" {
		if r, err = Compile(dir); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

// BenchmarkScanFile and BenchmarkScanMemory compare libyara's file scan of a window
// (ScanMem) with the memory-block scan the memory driver uses (ScanMemBlocks).
func BenchmarkScanFile(b *testing.B) {
	r, buf := benchRules(b), benchWindow()
	s, _ := r.NewScanner(0)
	defer s.Close()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := s.Scan(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScanMemory(b *testing.B) {
	r, buf := benchRules(b), benchWindow()
	s, _ := r.NewMemoryScanner(0, 0)
	defer s.Close()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := s.Scan(buf, 0x40000); err != nil {
			b.Fatal(err)
		}
	}
}
