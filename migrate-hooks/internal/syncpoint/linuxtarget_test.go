package syncpoint_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/domainmtest"
	"github.com/domainm/domainm/image/testenv"
	"github.com/domainm/domainm/memscan/linux/linuxtest"
	"github.com/domainm/domainm/memscan/vmtest"
	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/internal/host"
	"github.com/domainm/domainm/migrate-hooks/internal/lab"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// linuxScript is the Linux target's init: a few idle processes, free unmovable memory
// fragmented (postmark frag) right before vmark is loaded (its marker across a page
// boundary of its own module memory), a marker across a boundary of a tmpfs file that
// two processes map shared, and postmark post, which writes its marker only when the
// test tells it to, at the destination (its line, last, ends in " ready").
const linuxScript = `mount -t tmpfs tmpfs /tmp
echo 0 > /proc/sys/vm/compact_unevictable_allowed
i=0; while [ $i -lt 20 ]; do sleep 100000 & i=$((i+1)); done
/postmark frag > /tmp/frag.out &
while ! grep -q FRAG /tmp/frag.out; do sleep 1; done
cat /tmp/frag.out
insmod /vmark.ko tag=$TAG || echo INSMOD-FAILED
dmesg | grep VMARK
/postmark share $TAG /tmp/shared > /tmp/share.out &
while ! grep -q SHARE /tmp/share.out; do sleep 1; done
cat /tmp/share.out
OFF=$(sed -n 's/.* off=\([0-9]*\) .*/\1/p' /tmp/share.out)
/postmark attach /tmp/shared $OFF > /tmp/attach.out &
while ! grep -q ATTACH /tmp/attach.out; do sleep 1; done
cat /tmp/attach.out
/postmark post $TAG &
while true; do sleep 1000; done`

// postReady is postmark post's line, the guest's last before the migration.
var postReady = regexp.MustCompile(`POST pid=(\d+) va=(0x[0-9a-f]+) len=(\d+) pm0=(0x[0-9a-f]+) pm1=(0x[0-9a-f]+) go=(0x[0-9a-f]+) ready\r?\n`)

// linuxTarget is the booted target's view of itself, from its console.
type linuxTarget struct {
	tag string
	// vmark's marker: virtual address, length, frames, and where ("module": its own
	// memory; "vmalloc": pages it mapped there because its own came out contiguous).
	k            uint64
	kLen         int
	kPFN0, kPFN1 uint64
	kIn          string
	// The shared tmpfs page: the writer's and the other mapper's pid and virtual
	// address of the marker, its length and first frame.
	sPID, aPID int
	sVA, aVA   uint64
	sLen       int
	sPM0, sPM1 uint64
	// postmark post: pid, the marker's virtual address and length, its pages' pagemap
	// entries, and the guest-physical address of the page it polls for GO.
	pPID       int
	pVA        uint64
	pLen       int
	pPM0, pPM1 uint64
	goGPA      uint64
}

func (g *linuxTarget) marker(kind string, pid int) string {
	if kind == "K" {
		return fmt.Sprintf("DOMAINM-K-%s-Q7XK2P", g.tag)
	}
	return fmt.Sprintf("DOMAINM-%s-%s-%d-Q7XK2P", kind, g.tag, pid)
}

// pfn is a /proc/PID/pagemap entry's frame number (its flags, such as "exclusively
// mapped", differ between the processes that map a page).
func pfn(e uint64) uint64 { return e & (1<<55 - 1) }

func pmPhys(e, va uint64) uint64 { return pfn(e)<<12 | va&0xfff }

func parseLinuxTarget(tag, serial string) (*linuxTarget, error) {
	g := &linuxTarget{tag: tag}
	for _, bad := range []string{"INSMOD-FAILED", "SHARE-FAILED", "POST-FAILED"} {
		if strings.Contains(serial, bad) {
			return nil, fmt.Errorf("guest setup failed: %s", bad)
		}
	}
	hex := func(s string) uint64 { v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64); return v }
	num := func(s string) int { v, _ := strconv.Atoi(s); return v }
	k, err := linuxtest.ParseVMark(serial)
	if err != nil {
		return nil, err
	}
	s := regexp.MustCompile(`SHARE pid=(\d+) va=(0x[0-9a-f]+) len=(\d+) off=\d+ pm0=(0x[0-9a-f]+) pm1=(0x[0-9a-f]+)`).FindStringSubmatch(serial)
	a := regexp.MustCompile(`ATTACH pid=(\d+) va=(0x[0-9a-f]+) pm0=(0x[0-9a-f]+)`).FindStringSubmatch(serial)
	p := postReady.FindStringSubmatch(serial)
	if s == nil || a == nil || p == nil {
		return nil, fmt.Errorf("guest lines missing: SHARE %v ATTACH %v POST %v", s != nil, a != nil, p != nil)
	}
	g.k, g.kLen, g.kPFN0, g.kPFN1, g.kIn = k.VA, k.Len, k.PFN0, k.PFN1, k.In
	g.sPID, g.sVA, g.sLen, g.sPM0, g.sPM1 = num(s[1]), hex(s[2]), num(s[3]), hex(s[4]), hex(s[5])
	g.aPID, g.aVA = num(a[1]), hex(a[2])
	if pfn(hex(a[3])) != pfn(g.sPM0) {
		return nil, fmt.Errorf("the second mapper's page (%s) is not the writer's (%#x)", a[3], g.sPM0)
	}
	g.pPID, g.pVA, g.pLen, g.pPM0, g.pPM1, g.goGPA = num(p[1]), hex(p[2]), num(p[3]), hex(p[4]), hex(p[5]), hex(p[6])
	return g, nil
}

// linuxAlert is the part of an alert this test reads.
type linuxAlert struct {
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
		Target *struct {
			Host   string `json:"hypervisor_host"`
			Source string `json:"source"`
		} `json:"target"`
		Matches []struct {
			Address   string `json:"address"`
			Length    int    `json:"length"`
			Processes []struct {
				PID     int    `json:"pid"`
				Name    string `json:"name"`
				Address string `json:"address"`
			} `json:"processes"`
			ProcessCount int `json:"process_count"`
			Kernel       *struct {
				Kind    string `json:"kind"`
				Module  string `json:"module"`
				Address string `json:"address"`
			} `json:"kernel"`
			Virtual bool `json:"virtual"`
		} `json:"matches"`
	} `json:"domainm"`
}

// matchAlerts returns the memory-match alerts of rule so far.
func matchAlerts(path, rule string) []linuxAlert {
	var out []linuxAlert
	for _, a := range domainmtest.ReadAlerts[linuxAlert](path) {
		if a.Event.Action == "memory-match" && a.Rule != nil && a.Rule.Name == rule {
			out = append(out, a)
		}
	}
	return out
}

// TestCoMigrateLinuxTarget (issue 16): a Linux target (the host's Debian kernel under
// TCG, KASLR on) watched by the real supervisor is co-migrated by the real coordinator
// (sync points over QMP). At the source the supervisor finds, once each, a test
// module's marker across a page boundary of module memory whose frames are apart, and
// a marker across such a boundary of a tmpfs page that two processes map shared
// (one alert naming both). After resume at the destination, status names the guest
// (linux, derived again from the destination's RAM file after the resume), and a
// marker that a guest process writes only then, across a heap page boundary whose
// frames are apart, is alerted once: virtual, with its pid and virtual address, from
// the destination; a physical scan of the destination's RAM alone misses it.
func TestCoMigrateLinuxTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a Linux target under TCG (-short)")
	}
	bin := domainmtest.Binary(t) // before the VMs start
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	dir := t.TempDir()
	pm := filepath.Join(dir, "postmark")
	if err := linuxtest.BuildStatic("testdata/postmark.c", pm); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute) // boot up to 5 min at high load
	defer cancel()
	ko, err := linuxtest.BuildVMark(ctx, rel, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for guest, path := range map[string]string{"postmark": pm, "vmark.ko": ko} {
		if files[guest], err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
	}
	const tag = "MIG"
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, "TAG="+tag+"\n"+linuxScript, files); err != nil {
		t.Fatal(err)
	}

	prefix := "domainm-sp-linux-"
	srcHost, dstHost := newHostT(t, "src", prefix), newHostT(t, "dst", prefix)
	spec := lab.NewSpec(256, 64, accel(t))
	// The target boots Linux, which runs under TCG only here (DESIGN: "Test lab");
	// Domain M stays firmware-only (the supervisor runs on this host, on the RAM files).
	spec.Target = host.Machine{Name: "target", MemMiB: 256, Accel: "tcg", RAM: "shared",
		Kernel: kernel, Initrd: initrd, Append: "console=ttyS0 quiet panic=-1 no_timer_check"}
	t0 := time.Now()
	pair, err := lab.StartSource(ctx, srcHost, spec)
	if err != nil {
		t.Fatal(err)
	}
	serial := func(path string) string { b, _ := os.ReadFile(path); return string(b) }
	for !postReady.MatchString(serial(pair.Target.Serial)) {
		if time.Since(t0) > 5*time.Minute || ctx.Err() != nil {
			t.Fatalf("the target's guest not ready after %v:\n%s", time.Since(t0), serial(pair.Target.Serial))
		}
		time.Sleep(time.Second)
	}
	boot := time.Since(t0)
	g, err := parseLinuxTarget(tag, serial(pair.Target.Serial))
	if err != nil {
		t.Fatalf("%v\n%s", err, serial(pair.Target.Serial))
	}
	t.Logf("target up in %v: vmark's marker in %s memory at %#x (frames %#x, %#x); shared page: pids %d, %d; post: pid %d at %#x; %s",
		boot.Round(time.Second), g.kIn, g.k, g.kPFN0, g.kPFN1, g.sPID, g.aPID, g.pPID, g.pVA,
		regexp.MustCompile(`FRAG pages=\d+`).FindString(serial(pair.Target.Serial)))
	if s0, s1 := pmPhys(g.sPM0, g.sVA), pmPhys(g.sPM1, g.sVA+uint64(g.sLen)-1); s1 == s0+uint64(g.sLen)-1 {
		t.Fatalf("the shared marker's frames are adjacent: nothing to test")
	}

	// The supervisor, with rules for the three markers (the post marker's pid known now).
	sdir := t.TempDir()
	rules := filepath.Join(sdir, "rules")
	os.MkdirAll(rules, 0o755)
	os.WriteFile(filepath.Join(rules, "guest.yar"), []byte(fmt.Sprintf(`rule kmod_marker { strings: $k = "%s" condition: $k }
rule shared_marker { strings: $s = "%s" condition: $s }
rule post_marker { strings: $p = "%s" condition: $p }
`, g.marker("K", 0), g.marker("S", g.sPID), g.marker("P", g.pPID))), 0o644)
	d := startDomainm(t, sdir, pair.Target.RAMFile)
	d.WaitSocket(t, d.sock, 30*time.Second)
	c, err := control.Dial(ctx, d.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	status := func() proto.GuestStatus {
		t.Helper()
		r, err := c.Call(ctx, "status", nil)
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Detail proto.StatusDetail `json:"detail"`
		}
		if err := json.Unmarshal(r.Raw, &st); err != nil {
			t.Fatalf("status %s: %v", r.Raw, err)
		}
		return st.Detail.Memory.Guest
	}

	t.Run("module-seam", func(t *testing.T) {
		testenv.WaitFor(t, 3*time.Minute, "vmark's marker alerted", func() bool { return len(matchAlerts(d.alerts, "kmod_marker")) > 0 })
		a := matchAlerts(d.alerts, "kmod_marker")[0]
		// With free unmovable memory fragmented right before insmod, vmark's own pages
		// came out two frames apart in 9 of 9 boots (without it, contiguous in 4 of 4,
		// and vmark fell back to pages it maps into the vmalloc area).
		kind := "module"
		if g.kIn != "module" {
			t.Errorf("vmark's own module memory came out physically contiguous (marker in %s memory): the fragmentation did not work", g.kIn)
			kind = "vmalloc" // pages vmark mapped into the vmalloc area, allocated by vmark
		}
		pa := g.kPFN0<<12 | g.k&0xfff
		if ms := a.DomainM.Matches; len(ms) != 1 || !ms[0].Virtual || ms[0].Address != fmt.Sprintf("%#x", pa) || ms[0].Kernel == nil ||
			ms[0].Kernel.Kind != kind || ms[0].Kernel.Module != "vmark" || ms[0].Kernel.Address != fmt.Sprintf("%#x", g.k) || len(ms[0].Processes) != 0 {
			t.Errorf("vmark's marker: %+v; want one virtual match at %#x in %s vmark at %#x", ms, pa, kind, g.k)
		}
		t.Logf("vmark's marker across a seam of its %s memory alerted: %s", g.kIn, a.Message)
	})

	t.Run("shared-page", func(t *testing.T) {
		testenv.WaitFor(t, 2*time.Minute, "the shared marker alerted", func() bool { return len(matchAlerts(d.alerts, "shared_marker")) > 0 })
		as := matchAlerts(d.alerts, "shared_marker")
		ms := as[0].DomainM.Matches
		pa := pmPhys(g.sPM0, g.sVA)
		if len(as) != 1 || len(ms) != 1 || !ms[0].Virtual || ms[0].Address != fmt.Sprintf("%#x", pa) || ms[0].ProcessCount != 2 || len(ms[0].Processes) != 2 {
			t.Fatalf("shared marker: %d alerts, matches %+v; want one alert, one virtual match at %#x held by two processes", len(as), ms, pa)
		}
		want := map[int]string{g.sPID: fmt.Sprintf("%#x", g.sVA), g.aPID: fmt.Sprintf("%#x", g.aVA)}
		for _, p := range ms[0].Processes {
			if p.Name != "postmark" || want[p.PID] != p.Address {
				t.Errorf("shared marker held by %+v; want pids %d at %#x and %d at %#x", ms[0].Processes, g.sPID, g.sVA, g.aPID, g.aVA)
			}
		}
		t.Logf("shared marker: one alert: %s", as[0].Message)
	})

	if st := status(); st.OS != "linux" || st.Source != "file:"+pair.Target.RAMFile {
		t.Fatalf("status at the source: guest %+v, want linux derived from file:%s", st, pair.Target.RAMFile)
	}

	// The co-migration.
	tSide, mSide, err := pair.Destination(ctx, dstHost)
	if err != nil {
		t.Fatal(err)
	}
	hs := lab.Handshake(c, srcHost, dstHost, "target")
	r, err := syncpoint.Run(ctx, tSide, mSide, hs, syncpoint.Config{Mode: syncpoint.Sync})
	logResult(t, r)
	checkInvariant(t, r)
	if err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	dstRAM := dstHost.RAMFile("target")
	if !running(t, tSide.Dst) || running(t, tSide.Src) {
		t.Fatal("the target must run at the destination only")
	}

	// The supervisor derives the guest again, from the destination's RAM file.
	var st proto.GuestStatus
	testenv.WaitFor(t, 2*time.Minute, "the guest derived again at the destination", func() bool {
		st = status()
		return st.Source == "file:"+dstRAM && st.OS != ""
	})
	at, _ := time.Parse(time.RFC3339Nano, st.DerivedAt)
	if st.OS != "linux" || !strings.Contains(rel, st.Kernel) || st.Kernel == "" || at.Before(resumed.Add(-time.Minute)) || st.Processes < 20 || st.Seams == 0 {
		t.Errorf("status after resume: guest %+v; want linux %s derived from file:%s after the resume, its processes and seams", st, rel, dstRAM)
	}
	t.Logf("status after resume: guest %+v", st)
	// As an operator sees it.
	out, err := exec.Command(bin, "status", "--socket", d.sock).CombinedOutput()
	if line := regexp.MustCompile(`(?m)^  guest: +linux ` + regexp.QuoteMeta(st.Kernel) + `, derived from ` +
		regexp.QuoteMeta("file:"+dstRAM) + ` .*; \d+ processes, \d+ page boundaries scanned virtually`).FindString(string(out)); line == "" {
		t.Errorf("domainm status (%v) does not name the guest derived from the destination:\n%s", err, out)
	} else {
		t.Logf("domainm status: %s", line)
	}

	// postmark writes its marker now, at the destination.
	testenv.WriteAt(t, dstRAM, int64(g.goGPA), []byte(fmt.Sprintf("GO-%s-%d", tag, g.pPID)))
	dstSerial := tSide.Dst.(*host.VM).Serial
	// Wait for the whole line: the serial log is read while the guest writes it, and a
	// line cut after "POST-WRITTEN" (CI, stop 20) or inside a number must not be read.
	written := regexp.MustCompile(`POST-WRITTEN pm0=(0x[0-9a-f]+) pm1=(0x[0-9a-f]+)\r?\n`)
	var w []string
	testenv.WaitFor(t, time.Minute, "postmark wrote its marker at the destination", func() bool {
		w = written.FindStringSubmatch(serial(dstSerial))
		return w != nil || strings.Contains(serial(dstSerial), "POST-FAILED")
	})
	hex := func(s string) uint64 { v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64); return v }
	if w == nil || pfn(hex(w[1])) != pfn(g.pPM0) || pfn(hex(w[2])) != pfn(g.pPM1) {
		t.Fatalf("postmark's pages moved: %v, were %#x %#x", w, g.pPM0, g.pPM1)
	}
	first, last := pmPhys(g.pPM0, g.pVA), pmPhys(g.pPM1, g.pVA+uint64(g.pLen)-1)
	if last == first+uint64(g.pLen)-1 {
		t.Fatalf("the post marker's frames are adjacent (%#x, %#x): nothing to test", first, last)
	}
	testenv.WaitFor(t, 2*time.Minute, "the post marker alerted", func() bool { return len(matchAlerts(d.alerts, "post_marker")) > 0 })
	// Two more passes: still one alert.
	passes := func() int {
		r, _ := c.Call(ctx, "status", nil)
		var s struct {
			Detail proto.StatusDetail `json:"detail"`
		}
		json.Unmarshal(r.Raw, &s)
		return s.Detail.Memory.Passes
	}
	p0 := passes()
	testenv.WaitFor(t, 2*time.Minute, "two more passes", func() bool { return passes() >= p0+2 })
	as := matchAlerts(d.alerts, "post_marker")
	a := as[0]
	ms := a.DomainM.Matches
	if len(as) != 1 || len(ms) != 1 || !ms[0].Virtual || ms[0].Address != fmt.Sprintf("%#x", first) || ms[0].Length != g.pLen ||
		len(ms[0].Processes) != 1 || ms[0].Processes[0].PID != g.pPID || ms[0].Processes[0].Address != fmt.Sprintf("%#x", g.pVA) ||
		a.Process == nil || a.Process.PID != g.pPID || a.Process.Name != "postmark" {
		t.Errorf("post marker: %d alerts, process %+v, matches %+v; want one, virtual at %#x held by pid %d at %#x", len(as), a.Process, ms, first, g.pPID, g.pVA)
	}
	if tg := a.DomainM.Target; tg == nil || tg.Host != dstHost.Name || tg.Source != "file:"+dstRAM {
		t.Errorf("post marker alert's target %+v, want host %s, source file:%s", tg, dstHost.Name, dstRAM)
	}
	t.Logf("post marker after the migration: one alert: %s", a.Message)

	// A physical scan alone of the destination's RAM misses it; with the virtual view
	// (scan-memory's default) it is there.
	for _, virtual := range []bool{false, true} {
		out, err = exec.Command(bin, "scan-memory", "--source", "file:"+dstRAM, "--rules", rules, "--quiet",
			fmt.Sprintf("--virtual=%v", virtual)).CombinedOutput()
		if strings.Contains(string(out), "post_marker") != virtual {
			t.Errorf("scan-memory --virtual=%v of the destination's RAM (%v): post marker found %v:\n%s", virtual, err, !virtual, out)
		}
	}
	// The source's RAM, left behind, never held it: the supervisor read the destination.
	if out, err := exec.Command(bin, "scan-memory", "--source", "file:"+pair.Target.RAMFile, "--rules", rules, "--quiet").CombinedOutput(); strings.Contains(string(out), "post_marker") || !strings.Contains(string(out), "shared_marker") {
		t.Errorf("scan-memory of the source's RAM (%v): want the shared marker and not the post marker:\n%s", err, out)
	}
	for _, rule := range []string{"kmod_marker", "shared_marker"} {
		if n := len(matchAlerts(d.alerts, rule)); n != 1 {
			t.Errorf("%s alerted %d times over the migration, want once", rule, n)
		}
	}
	// Same guest, same kernel: the findings carried over, nothing said changed or unknown.
	for _, a := range domainmtest.ReadAlerts[linuxAlert](d.alerts) {
		switch a.Event.Action {
		case "memory-match-gone", "kernel-changed", "memory-guest-layout-unknown", "guest-layout-unknown":
			t.Errorf("alert over the migration: %s: %s", a.Event.Action, a.Message)
		}
	}
	t.Logf("test took %v (target boot %v); load %s", time.Since(t0).Round(time.Second), boot.Round(time.Second), loadavg())
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}
