package bench

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// The initramfs is read back by the real cpio tool.
func TestInitramfs(t *testing.T) {
	path, err := BuildInitramfs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("cpio", "-it", "--quiet")
	cmd.Stdin = f
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	if got := strings.Fields(string(out)); strings.Join(got, " ") != "bin bin/busybox init" {
		t.Errorf("initramfs holds %q, want bin, bin/busybox, init", got)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{"1gbit": 125_000_000, "500mbit": 62_500_000, "8kbit": 1000} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1gb", "-1gbit", "xmbit"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
}

// Tables put the published values beside ours and judge the goals.
func TestTables(t *testing.T) {
	o := Options{Fixed: 512, Sizes: []int{512, 256}, Reps: 1, Nets: []string{"shaped"}, Rate: "1gbit",
		Modes: []syncpoint.Mode{syncpoint.NoSync, syncpoint.Sync, syncpoint.Paced}}
	ms := func(n int) syncpoint.Figure { return syncpoint.Measured(time.Duration(n) * time.Millisecond) }
	run := func(mode string, tm, mm int, total, down int) Run {
		return Run{Net: "shaped", Mode: mode, TargetMiB: tm, DomMMiB: mm,
			Result: syncpoint.Result{Total: ms(total), TargetDowntime: ms(down), Waits: [4]syncpoint.Figure{ms(1), ms(2), ms(3), ms(4)}}}
	}
	runs := []Run{
		run("nosync", 512, 512, 8600, 250), run("sync", 512, 512, 8600, 600), run("paced", 512, 512, 8600, 300),
		run("nosync", 256, 512, 6400, 250), run("sync", 256, 512, 6400, 2500), run("paced", 256, 512, 6500, 420),
		{Net: "shaped", Mode: "nosync", TargetMiB: 512, DomMMiB: 256, Err: "boom"},
	}
	out := Tables(o, runs)
	for _, want := range []string{"2 [92]", "600 [1112]", "2500 [5971]", "failed", "1.40x equal-size paced", "goal <= 1.5x: met", "+1.6%"} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
	// No run measured a P1 margin: the row says so instead of showing 0.
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "P1 margin ms (min) sync") && (!strings.Contains(line, "n/a") || strings.Contains(line, " 0 ")) {
			t.Errorf("unmeasured P1 margin shown as %q, want n/a", line)
		}
	}
	o.Out = t.TempDir()
	pngs, err := Plot(o, runs)
	if err != nil || len(pngs) != 4 {
		t.Fatalf("plots %v, %v; want 4", pngs, err)
	}
	for _, p := range pngs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
			t.Errorf("%s is not a PNG (%v)", p, err)
		}
	}
	runs[5].Result.TargetDowntime = ms(500)
	if out := Tables(o, runs); !strings.Contains(out, "goal <= 1.5x: MISSED") {
		t.Errorf("a paced downtime 1.67x equal-size is not flagged:\n%s", out)
	}
}
