package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/linux"
)

// TestGuestAttribution boots one Linux guest (TCG, KASLR on, 2 vCPUs, a few hundred
// processes) in which heapmark holds a marker in its heap, and checks on it that memory
// matches name who holds them: in scan-memory's --json and text output, in the alerts of
// domainm run (also after a prepare/resume, which derives the layout again), each
// checked against the guest's own /proc/PID/pagemap, /proc/modules and /proc/kallsyms.
// It also measures what attribution adds to a pass (logged as a table).
func TestGuestAttribution(t *testing.T) {
	g := bootHeapGuest(t, "ATTR")
	rules := g.rules(t)
	ram := "file:" + g.vm.RAMFile
	t.Logf("the guest's ps:\n%s", firstLines(g.ps, 8))

	t.Run("scan-memory", func(t *testing.T) {
		out, errOut, code := domainm(t, "scan-memory", "--source", ram, "--rules", rules, "--json", "--quiet")
		if code != ExitFindings {
			t.Fatalf("exit %d, want %d; stderr: %s", code, ExitFindings, errOut)
		}
		fs := decodeFindings(t, out)
		g.checkHeapA(t, fs["heap_a"])
		g.checkHeapB(t, fs["heap_b"])
		g.checkModuleSeam(t, fs["kmod_marker"])
		g.checkKernel(t, fs)
		var sum summary
		if err := json.Unmarshal([]byte(lastLine(errOut)), &sum); err != nil {
			t.Fatalf("summary %q: %v", errOut, err)
		}
		if a := sum.Attribution; a.Error != "" || a.Kernel == "" || a.Processes < heapGuestProcs || a.Virtual == nil || a.Virtual.Error != "" || a.Virtual.Seams < heapGuestProcs {
			t.Errorf("summary attribution %+v (virtual %+v), want the kernel, >= %d processes and seams", a, a.Virtual, heapGuestProcs)
		} else {
			t.Logf("virtual scan: %+v", *a.Virtual)
		}
		// Marker B lies across a seam: the physical scan alone misses it.
		out, errOut, code = domainm(t, "scan-memory", "--source", ram, "--rules", rules, "--json", "--quiet", "--virtual=false")
		if fs := decodeFindings(t, out); code != ExitFindings || fs["heap_b"] != nil || fs["heap_a"] == nil {
			t.Errorf("physical scan alone (exit %d): heap_b %+v, heap_a found %v; stderr %s", code, fs["heap_b"], fs["heap_a"] != nil, errOut)
		}
		if sum = (summary{}); json.Unmarshal([]byte(lastLine(errOut)), &sum) != nil || sum.Attribution.Virtual != nil {
			t.Errorf("--virtual=false: summary %q says a virtual scan ran", lastLine(errOut))
		}
		// The text output names the process next to the match.
		out, errOut, code = domainm(t, "scan-memory", "--source", ram, "--rules", rules, "--quiet")
		want := fmt.Sprintf("pid %d heapmark %#x", g.pid, g.a)
		wantB := fmt.Sprintf("pid %d heapmark %#x, virtual (across a page boundary)", g.pid, g.b)
		if code != ExitFindings || !strings.Contains(out, want) || !strings.Contains(out, wantB) || !strings.Contains(errOut, "matches attributed: Linux ") ||
			!strings.Contains(errOut, "; virtual scan: ") {
			t.Errorf("text output lacks %q or %q, or the summary the attribution and the virtual scan (exit %d):\n%s\n%s", want, wantB, code, out, errOut)
		}
		// Not a Linux guest (the RAM file's layout cut off): says so, matches stay physical.
		_, errOut, _ = domainm(t, "scan-memory", "--source", ram, "--layout", "ranges:0+0x800000@0", "--rules", rules, "--quiet")
		if !strings.Contains(errOut, "matches not attributed to processes, virtual address spaces not scanned: guest layout unknown") {
			t.Errorf("scan of memory without a kernel: stderr %q", errOut)
		}
	})

	t.Run("run", func(t *testing.T) {
		s := newSetup(t, "", "")
		cfg, _ := os.ReadFile(s.cfg)
		cfg = []byte(strings.Replace(string(cfg), "file:"+s.ram, ram, 1))
		os.WriteFile(s.cfg, cfg, 0o644)
		os.Remove(filepath.Join(s.rules, "a.yar"))
		b, _ := os.ReadFile(filepath.Join(rules, "guest.yar"))
		s.rule(t, "guest.yar", string(b))
		n := listenNotify(t, s.dir)
		p := startDaemon(t, s.cfg, n.path, 0)
		var got attribAlert
		waitUntil(t, "heap_a alerted", 3*time.Minute, func() bool {
			for _, a := range readAttribAlerts(s.alerts) {
				if a.Event.Action == "memory-match" && a.Rule != nil && a.Rule.Name == "heap_a" {
					got = a
					return true
				}
			}
			return false
		})
		if got.Process == nil || got.Process.PID != g.pid || got.Process.Name != "heapmark" {
			t.Errorf("alert process.* = %+v, want pid %d heapmark", got.Process, g.pid)
		}
		wantMsg := fmt.Sprintf("(pid %d heapmark at %#x)", g.pid, g.a)
		if !strings.Contains(got.Message, wantMsg) {
			t.Errorf("alert message %q lacks %q", got.Message, wantMsg)
		}
		if ms := got.DomainM.Matches; len(ms) != 1 || ms[0].Address != fmt.Sprintf("%#x", g.phys(t, g.a)) ||
			len(ms[0].Processes) != 1 || ms[0].Processes[0].Address != fmt.Sprintf("%#x", g.a) {
			t.Errorf("alert matches %+v, want %#x held by pid %d at %#x", ms, g.phys(t, g.a), g.pid, g.a)
		}
		var gotB attribAlert
		waitUntil(t, "heap_b alerted", 2*time.Minute, func() bool {
			for _, a := range readAttribAlerts(s.alerts) {
				if a.Event.Action == "memory-match" && a.Rule != nil && a.Rule.Name == "heap_b" {
					gotB = a
					return true
				}
			}
			return false
		})
		if ms := gotB.DomainM.Matches; gotB.Process == nil || gotB.Process.PID != g.pid || len(ms) != 1 || !ms[0].Virtual ||
			ms[0].Address != fmt.Sprintf("%#x", g.phys(t, g.b)) || len(ms[0].Processes) != 1 || ms[0].Processes[0].Address != fmt.Sprintf("%#x", g.b) {
			t.Errorf("heap_b alert: process %+v, matches %+v; want pid %d, virtual, at %#x and %#x", gotB.Process, ms, g.pid, g.phys(t, g.b), g.b)
		}
		waitUntil(t, "the layout derived", time.Minute, func() bool {
			return strings.Count(p.stderr.String(), "guest layout derived") == 1
		})
		// A co-migration: the layout is derived again at the first pass after resume.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c, err := control.Dial(ctx, s.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if r, err := c.Do(ctx, "prepare", nil); err != nil || r.State != "quiesced" {
			t.Fatalf("prepare: %+v %v", r, err)
		}
		if r, err := c.Do(ctx, "resume", control.ResumeArgs{Source: ram}); err != nil || r.State != "monitoring" {
			t.Fatalf("resume: %+v %v", r, err)
		}
		waitUntil(t, "the layout derived again after resume", 2*time.Minute, func() bool {
			return strings.Count(p.stderr.String(), "guest layout derived") == 2
		})
		if strings.Contains(p.stderr.String(), "guest layout unknown") {
			t.Errorf("the daemon said the layout is unknown:\n%s", p.stderr.String())
		}
		p.stop(t)
	})

	t.Run("cost", func(t *testing.T) { measureAttribution(t, ram, rules) })
}

// checkHeapA: marker A is found once, at the physical address the guest's pagemap
// gives for its virtual address, held by heapmark alone at that virtual address.
func (g *heapGuest) checkHeapA(t *testing.T, f *detectors.Finding) {
	t.Helper()
	if f == nil {
		t.Fatalf("marker A %q not found", g.marker("A"))
	}
	pa := g.phys(t, g.a)
	if len(f.Matches) != 1 {
		t.Fatalf("marker A found %d times: %+v", len(f.Matches), f.Matches)
	}
	m := f.Matches[0]
	want := detectors.ProcessMapping{PID: g.pid, Name: "heapmark", Address: g.a}
	if m.Offset != pa || len(m.Processes) != 1 || m.Processes[0] != want || m.ProcessCount != 1 || m.Kernel != nil {
		t.Errorf("marker A: at %#x held by %+v (%d) kernel %+v; want %#x (guest's pagemap) held by %+v", m.Offset, m.Processes, m.ProcessCount, m.Kernel, pa, want)
	}
	if f.Process == nil || f.Process.PID != g.pid || f.Process.Address != g.a {
		t.Errorf("finding process %+v", f.Process)
	}
}

// checkHeapB: marker B, across a heap page boundary whose pages the guest's pagemap
// puts apart in physical memory, is found once, virtual, at the physical address of its
// first byte, held by heapmark at its virtual address.
func (g *heapGuest) checkHeapB(t *testing.T, f *detectors.Finding) {
	t.Helper()
	first, last := g.phys(t, g.b), g.phys(t, g.b+uint64(g.bLen)-1)
	if last == first+uint64(g.bLen)-1 {
		t.Fatalf("marker B's pages are adjacent in physical memory (%#x, %#x): nothing to test", first, last)
	}
	if f == nil {
		t.Fatalf("marker B %q (across a seam) not found", g.marker("B"))
	}
	if len(f.Matches) != 1 {
		t.Fatalf("marker B found %d times: %+v", len(f.Matches), f.Matches)
	}
	m := f.Matches[0]
	want := detectors.ProcessMapping{PID: g.pid, Name: "heapmark", Address: g.b}
	if !m.Virtual || m.Offset != first || m.Length != g.bLen || len(m.Processes) != 1 || m.Processes[0] != want || m.Text != g.marker("B") {
		t.Errorf("marker B: %+v; want virtual at %#x (guest's pagemap) held by %+v", m, first, want)
	}
}

// checkModuleSeam: vmark's marker, across a page boundary of the module's memory whose
// frames the module itself found apart, is found once, virtual, at the physical
// address of its first byte, attributed to module vmark at its kernel virtual address.
func (g *heapGuest) checkModuleSeam(t *testing.T, f *detectors.Finding) {
	t.Helper()
	if f == nil {
		t.Fatalf("vmark's marker (across a page boundary of module memory) not found")
	}
	if len(f.Matches) != 1 {
		t.Fatalf("vmark's marker found %d times: %+v", len(f.Matches), f.Matches)
	}
	m := f.Matches[0]
	pa := g.kPFN0<<12 | g.k&0xfff
	// In the vmalloc area, the module is the one that allocated the area (vm_struct.caller).
	kind, module := linux.KernelModule, "vmark"
	if g.kIn == "vmalloc" {
		// heapmark fragments free unmovable memory (pipes) before vmark is loaded: vmark's
		// own pages came out two frames apart in 10 of 10 boots (without it, contiguous
		// in 4 of 4, and vmark fell back to pages it vmaps).
		t.Errorf("vmark's own module memory came out physically contiguous: the fragmentation did not work")
		kind = linux.KernelVmalloc
	}
	if !m.Virtual || m.Offset != pa || m.Length != g.kLen || m.Kernel == nil || m.Kernel.Kind != kind ||
		m.Kernel.Module != module || m.Kernel.Address != g.k || len(m.Processes) != 0 {
		t.Errorf("vmark's marker: %+v (kernel %+v); want virtual at %#x in %s %s at %#x", m, m.Kernel, pa, kind, module, g.k)
	}
	t.Logf("vmark's marker across a seam of its %s memory found at %#x, kernel %+v", g.kIn, m.Offset, *m.Kernel)
}

// checkKernel: the nbd module's string is attributed to module nbd at an address inside
// it (the guest's /proc/modules); other copies (the module file in the initramfs) to
// the direct map.
func (g *heapGuest) checkKernel(t *testing.T, fs map[string]*detectors.Finding) {
	t.Helper()
	f := fs["nbd_string"]
	if f == nil {
		t.Fatal("the nbd module's string was not found")
	}
	mod, kinds := 0, map[string]int{}
	for _, m := range f.Matches {
		if m.Kernel == nil {
			t.Errorf("nbd string at %#x: no kernel mapping (processes %+v)", m.Offset, m.Processes)
			continue
		}
		kinds[m.Kernel.Kind]++
		if m.Kernel.Kind == linux.KernelModule {
			r := g.modules["nbd"]
			if m.Kernel.Module != "nbd" || m.Kernel.Address < r[0] || m.Kernel.Address >= r[0]+r[1] {
				t.Errorf("nbd string at %#x: %+v, want module nbd in [%#x, %#x)", m.Offset, m.Kernel, r[0], r[0]+r[1])
			}
			mod++
		}
	}
	if mod == 0 {
		t.Errorf("nbd string never attributed to module nbd: %v", kinds)
	}
	t.Logf("nbd string: %d matches, kernel mappings %v", len(f.Matches), kinds)
}

func decodeFindings(t *testing.T, out string) map[string]*detectors.Finding {
	t.Helper()
	fs := map[string]*detectors.Finding{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := decodeFinding(t, []byte(l))
		fs[f.Rule] = &f
	}
	return fs
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

func firstLines(s string, n int) string {
	ls := strings.Split(s, "\n")
	return strings.Join(ls[:min(n, len(ls))], "\n")
}

// attribAlert is the part of an alert the attribution tests read.
type attribAlert struct {
	Message string `json:"message"`
	Event   struct {
		Action string `json:"action"`
	} `json:"event"`
	Rule *struct {
		Name string `json:"name"`
	} `json:"rule"`
	Process *struct {
		PID  int    `json:"pid"`
		Name string `json:"name"`
	} `json:"process"`
	DomainM struct {
		Matches []struct {
			Address   string `json:"address"`
			Processes []struct {
				PID     int    `json:"pid"`
				Name    string `json:"name"`
				Address string `json:"address"`
			} `json:"processes"`
			Kernel *struct {
				Kind, Module, Address string
			} `json:"kernel"`
			Virtual bool `json:"virtual"`
		} `json:"matches"`
	} `json:"domainm"`
}

func readAttribAlerts(path string) []attribAlert {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []attribAlert
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var a attribAlert
		if json.Unmarshal(sc.Bytes(), &a) == nil {
			out = append(out, a)
		}
	}
	return out
}

// measureAttribution measures, in this process, a full pass and unchanged passes over
// the guest with the shipped rules plus the guest's, and what attributing their matches
// adds (listing processes and modules, walking every process's page tables once).
func measureAttribution(t *testing.T, ram, guestRules string) {
	dir := t.TempDir()
	for _, d := range []string{"../../../rules/yara", guestRules} {
		ents, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(d, e.Name()))
			os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644)
		}
	}
	rules, err := yara.Compile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if keep := os.Getenv("DOMAINM_KEEP_GUEST_RAM"); keep != "" {
		// For profiling offline (memscan/linux BenchmarkSnapshotRAM).
		if b, err := os.ReadFile(strings.TrimPrefix(ram, "file:")); err == nil {
			os.WriteFile(keep, b, 0o644)
		}
	}
	src, err := memscan.Open(ram, memscan.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rs := yara.MemoryRules{Rules: rules}
	d := memscan.NewDriver(memscan.DriverConfig{Workers: 1})
	opts := memscan.PassOptions{Rules: func() memscan.RuleSet { return rs }}
	g, err := linux.OpenGuest(src)
	if err != nil {
		t.Fatal(err)
	}
	// Each phase is timed in wall-clock and in this process's CPU time: on a machine
	// shared with other jobs, CPU time is the steadier figure.
	type cost struct{ wall, cpu time.Duration }
	timed := func(f func()) cost {
		c0, t0 := cpuTime(), time.Now()
		f()
		return cost{time.Since(t0), cpuTime() - c0}
	}
	var snap *linux.Snapshot
	var st linux.AttributeStats
	var attrTables int
	attribute := func(res memscan.PassResult) cost {
		return timed(func() {
			var err error
			if snap, err = g.Snapshot(); err != nil {
				t.Fatal(err)
			}
			ms := append([]detectors.Match(nil), res.Matches...)
			snap.Since(res.Unchanged)
			if st, err = snap.Annotate(ms); err != nil {
				t.Fatal(err)
			}
			attrTables = max(attrTables, st.Tables)
		})
	}
	sc := memscan.NewSeamScanner(0, 1, 0)
	var vs linux.VirtualStats
	// The virtual scan's own view of the guest: its address-space cache is its own, so
	// that it does not profit from the attribution's walks (in domainm run one walk
	// serves both).
	gv := &linux.Guest{In: g.In}
	virtual := func(res memscan.PassResult) cost {
		return timed(func() {
			s, err := gv.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			s.Since(res.Unchanged)
			if _, vs, err = s.ScanVirtual(context.Background(), src, sc, rs, res.Matches); err != nil || len(vs.Errors) > 0 {
				t.Fatalf("virtual scan: %v %v", err, vs.Errors)
			}
		})
	}
	var full memscan.PassResult
	cFull := timed(func() {
		if full, err = d.Pass(context.Background(), src, opts); err != nil {
			t.Fatal(err)
		}
	})
	aFull := attribute(full)
	vFull := virtual(full)
	vsFull := vs
	var cUnch, aUnch, vUnch []cost
	for range 5 {
		var res memscan.PassResult
		cUnch = append(cUnch, timed(func() {
			if res, err = d.Pass(context.Background(), src, opts); err != nil {
				t.Fatal(err)
			}
		}))
		if res.BlocksScanned > res.Blocks/4 {
			t.Fatalf("unchanged pass scanned %d of %d blocks", res.BlocksScanned, res.Blocks)
		}
		aUnch = append(aUnch, attribute(res))
		vUnch = append(vUnch, virtual(res))
	}
	med := func(cs []cost) cost {
		var w, c []time.Duration
		for _, x := range cs {
			w, c = append(w, x.wall), append(c, x.cpu)
		}
		return cost{median(w), median(c)}
	}
	mu, ma, mv := med(cUnch), med(aUnch), med(vUnch)
	reused, walked := gv.CacheStats()
	matches := 0
	for _, m := range full.Matches {
		matches += len(m.Strings)
	}
	pct := func(a, b time.Duration) float64 { return 100 * float64(a) / float64(b) }
	r := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	row := func(name string, p, a, v cost) string {
		return fmt.Sprintf("| %-9s | %9s | %9s | %8s %5.1f%% | %8s %5.1f%% | %8s %5.1f%% | %8s %5.1f%% |", name,
			r(p.wall), r(p.cpu), r(a.wall), pct(a.wall, p.wall), r(a.cpu), pct(a.cpu, p.cpu), r(v.wall), pct(v.wall, p.wall), r(v.cpu), pct(v.cpu, p.cpu))
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("cost of attribution and of the virtual scan: guest %d MiB, %d user processes (%d page tables), %d physical matches; "+
		"%d seams (%d page tables walked), %d scanned in the full pass (%d KiB), %d zero, %d unchanged and %d rescanned in the last unchanged pass (%d page tables read); address-space walks reused %d, done %d; layout derived once in %v; load %s\n"+
		"| pass      | physical: wall |  cpu | attribution: wall (added) | cpu (added) | attribution+virtual: wall (added) | cpu (added) |\n%s\n%s  (unchanged: medians of 5; one worker throughout)",
		memscan.TotalSize(src.Ranges())>>20, st.Processes, attrTables, matches,
		vsFull.Seams, vsFull.Tables, vsFull.Scanned, vsFull.Bytes>>10, vs.Zero, vs.Unchanged, vs.Scanned, vs.Tables, reused, walked, g.Took.Round(time.Millisecond), strings.TrimSpace(string(load)),
		row("full", cFull, aFull, vFull), row("unchanged", mu, ma, mv))
	if st.Processes < heapGuestProcs {
		t.Errorf("attribution walked %d processes, want >= %d", st.Processes, heapGuestProcs)
	}
	if vs.Scanned > vs.Seams/4 {
		t.Errorf("unchanged pass: %d of %d seams scanned again", vs.Scanned, vs.Seams)
	}
}

// cpuTime is the CPU time this process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
