package memscan_test

import (
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/xxh3"
	"golang.org/x/sys/unix"

	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// TestWindowCostBreakdown says where the driver's CPU beyond libyara's goes on dense
// memory (issue 15 goal 1): the same mapped bytes scanned by libyara as one block, window
// by window in place, in place with the change hash, and copied with copyHash (the path
// of a file source that can shrink), in turn, each the median of five rounds of process
// CPU time. DOMAINM_WINDOWCOST_IMAGE names the image (memscan-bench -keep leaves its dense
// image in /dev/shm/domainm-bench) and DOMAINM_WINDOWCOST_RULES the rules folder; the
// test runs only with both set. It asserts nothing about the ratios (a measurement, not a
// goal checked in CI).
func TestWindowCostBreakdown(t *testing.T) {
	img, rulesDir := os.Getenv("DOMAINM_WINDOWCOST_IMAGE"), os.Getenv("DOMAINM_WINDOWCOST_RULES")
	if img == "" || rulesDir == "" {
		t.Skip("a measurement: set DOMAINM_WINDOWCOST_IMAGE and DOMAINM_WINDOWCOST_RULES")
	}
	r, err := yara.Compile(filepath.Clean(rulesDir))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	sc, err := r.NewMemoryScanner(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	bs, ov := memscan.DefaultBlockSize, memscan.DefaultOverlap
	buf, big := make([]byte, bs+ov), make([]byte, 32*(bs+ov))
	windows := func(fn func(gpa int, win []byte) int) int {
		n := 0
		for gpa := 0; gpa < len(mem); gpa += bs {
			n += fn(gpa, mem[gpa:min(gpa+bs+ov, len(mem))])
		}
		return n
	}
	scan := func(b []byte, gpa int) int {
		m, err := sc.Scan(b, uint64(gpa))
		if err != nil {
			t.Fatal(err)
		}
		return len(m)
	}
	var sink uint64
	paths := []struct {
		name string
		run  func() int
	}{
		{"one block", func() int { return scan(mem, 0) }},
		{"windows in place", func() int { return windows(func(gpa int, w []byte) int { return scan(w, gpa) }) }},
		{"windows in place, ScanEach 32", func() int {
			n := 0
			var offs, lens []int
			var bases []uint64
			for run := 0; run < len(mem); run += 32 * bs {
				offs, lens, bases = offs[:0], lens[:0], bases[:0]
				for gpa := run; gpa < min(run+32*bs, len(mem)); gpa += bs {
					offs, lens = append(offs, gpa-run), append(lens, min(bs+ov, len(mem)-gpa))
					bases = append(bases, uint64(gpa))
				}
				outs, errs := sc.ScanEach(mem[run:], offs, lens, bases)
				for i := range outs {
					if errs[i] != nil {
						t.Fatal(errs[i])
					}
					n += len(outs[i])
				}
			}
			return n
		}},
		{"hash only", func() int {
			return windows(func(gpa int, w []byte) int { sink += xxh3.HashSeed(w, 1); return 0 })
		}},
		{"copyHash only", func() int {
			return windows(func(gpa int, w []byte) int { sink += memscan.CopyHash(buf, w); return 0 })
		}},
		{"windows in place + hash", func() int {
			return windows(func(gpa int, w []byte) int { sink += xxh3.HashSeed(w, 1); return scan(w, gpa) })
		}},
		{"copyHash 32, then windows", func() int {
			n, k := 0, 0
			var gpas [32]int
			var lens [32]int
			flush := func() {
				for j := range k {
					n += scan(big[j*(bs+ov):j*(bs+ov)+lens[j]], gpas[j])
				}
				k = 0
			}
			windows(func(gpa int, w []byte) int {
				sink += memscan.CopyHash(big[k*(bs+ov):], w)
				gpas[k], lens[k] = gpa, len(w)
				if k++; k == 32 {
					flush()
				}
				return 0
			})
			flush()
			return n
		}},
		{"copyHash + windows", func() int {
			return windows(func(gpa int, w []byte) int { sink += memscan.CopyHash(buf, w); return scan(buf[:len(w)], gpa) })
		}},
	}
	if only := os.Getenv("DOMAINM_WINDOWCOST_ONLY"); only != "" { // one path, by name (strace -c)
		for _, p := range paths {
			if p.name == only {
				paths = append(paths[:0], p)
				break
			}
		}
	}
	scan(mem, 0) // fault the mapping in: every path then reads mapped pages
	cpu, sys, flt := make([][]float64, len(paths)), make([][]float64, len(paths)), make([][]float64, len(paths))
	thr := make([][]float64, len(paths))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range 5 {
		for i, p := range paths {
			u0, s0, f0 := procCPU()
			t0 := threadCPU()
			p.run()
			thr[i] = append(thr[i], (threadCPU() - t0).Seconds())
			u1, s1, f1 := procCPU()
			cpu[i] = append(cpu[i], (u1 + s1 - u0 - s0).Seconds())
			sys[i] = append(sys[i], (s1 - s0).Seconds())
			flt[i] = append(flt[i], float64(f1-f0))
		}
	}
	med := func(v []float64) float64 { s := append([]float64(nil), v...); sort.Float64s(s); return s[len(s)/2] }
	base := med(cpu[0])
	for i, p := range paths {
		t.Logf("%-26s %.4f CPU-s (sys %.4f, %6.0f minor faults; scanning thread %.4f)  %.3fx one block", p.name, med(cpu[i]), med(sys[i]), med(flt[i]), med(thr[i]), med(cpu[i])/base)
	}
	_ = sink
}

// procCPU returns the process's user and system CPU time and its minor faults.
func procCPU() (user, sys time.Duration, minflt int64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), ru.Minflt
}
