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
		g.checkKernel(t, fs)
		var sum summary
		if err := json.Unmarshal([]byte(lastLine(errOut)), &sum); err != nil {
			t.Fatalf("summary %q: %v", errOut, err)
		}
		if a := sum.Attribution; a.Error != "" || a.Kernel == "" || a.Processes < heapGuestProcs {
			t.Errorf("summary attribution %+v, want the kernel and >= %d processes", a, heapGuestProcs)
		}
		// The text output names the process next to the match.
		out, errOut, code = domainm(t, "scan-memory", "--source", ram, "--rules", rules, "--quiet")
		want := fmt.Sprintf("pid %d heapmark %#x", g.pid, g.a)
		if code != ExitFindings || !strings.Contains(out, want) || !strings.Contains(errOut, "matches attributed: Linux ") {
			t.Errorf("text output lacks %q (exit %d):\n%s\n%s", want, code, out, errOut)
		}
		// Not a Linux guest (the RAM file's layout cut off): says so, matches stay physical.
		_, errOut, _ = domainm(t, "scan-memory", "--source", ram, "--layout", "ranges:0+0x800000@0", "--rules", rules, "--quiet")
		if !strings.Contains(errOut, "matches not attributed to processes: guest layout unknown") {
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
		var f detectors.Finding
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Fatalf("finding %q: %v", l, err)
		}
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
	attribute := func(ms []detectors.Match) (time.Duration, linux.AttributeStats) {
		t0 := time.Now()
		snap, err := g.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		st, err := snap.Annotate(ms)
		if err != nil {
			t.Fatal(err)
		}
		return time.Since(t0), st
	}
	t0 := time.Now()
	full, err := d.Pass(context.Background(), src, opts)
	tFull := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	aFull, st := attribute(full.Matches)
	var tUnch, aUnch []time.Duration
	for range 5 {
		t0 := time.Now()
		res, err := d.Pass(context.Background(), src, opts)
		tUnch = append(tUnch, time.Since(t0))
		if err != nil || res.BlocksScanned > res.Blocks/4 {
			t.Fatalf("unchanged pass scanned %d of %d blocks: %v", res.BlocksScanned, res.Blocks, err)
		}
		a, _ := attribute(res.Matches)
		aUnch = append(aUnch, a)
	}
	mu, ma := median(tUnch), median(aUnch)
	matches := 0
	for _, m := range full.Matches {
		matches += len(m.Strings)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("attribution cost: guest %d MiB, %d user processes (%d page tables), %d matches; layout derived once in %v; load %s\n"+
		"| pass      | scan (1 worker) | attribution | added  |\n"+
		"| full      | %15v | %11v | %5.1f%% |\n"+
		"| unchanged | %15v | %11v | %5.1f%% |  (medians of 5)",
		memscan.TotalSize(src.Ranges())>>20, st.Processes, st.Tables, matches, g.Took.Round(time.Millisecond), strings.TrimSpace(string(load)),
		tFull.Round(time.Millisecond), aFull.Round(10*time.Microsecond), 100*float64(aFull)/float64(tFull),
		mu.Round(10*time.Microsecond), ma.Round(10*time.Microsecond), 100*float64(ma)/float64(mu))
	if st.Processes < heapGuestProcs {
		t.Errorf("attribution walked %d processes, want >= %d", st.Processes, heapGuestProcs)
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
