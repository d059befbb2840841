//go:build xenlab

package xenlab

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestXenLab builds the nested Xen lab from nothing (or its cache) and runs it: see the
// package doc. Run by `make xen-lab`.
func TestXenLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the Xen lab needs root (debootstrap, chroot, mkfs.ext4 -d)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "debootstrap", "mkfs.ext4", "debugfs", "cpio", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: make deps installs it", tool)
		}
	}
	if _, err := os.Stat("/usr/include/xenctrl.h"); err != nil {
		t.Fatal("libxen-dev not installed (the dom0 tool is built with cgo against libxenctrl): make deps installs it")
	}
	repo, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 105*time.Minute)
	defer cancel()
	l := New(repo, os.Stderr)
	// XENLAB_DOMM=supervisor: Domain M runs the real supervisor (domainm run) instead of the agent.
	l.Supervisor = os.Getenv("XENLAB_DOMM") == "supervisor"
	// XENLAB_ACCEL: QEMU's -accel for both hosts (default DefaultAccel).
	l.Accel = os.Getenv("XENLAB_ACCEL")
	// The target's disk image on shared NFS storage, checked by Domain M: on with the
	// supervisor (the agent has no disk check) since lab run nfs-1 passed; XENLAB_NFS=0
	// turns it off, XENLAB_NFS=1 asks for it.
	nfs := os.Getenv("XENLAB_NFS")
	l.NFS = nfs == "1" || (l.Supervisor && nfs != "0")
	// XENLAB_ANALYZE=1 reads the last run's logs again without building or booting.
	if os.Getenv("XENLAB_ANALYZE") != "1" {
		if err := l.Prepare(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.Boot(ctx, freePort(t)); err != nil {
			t.Error(err)
		}
	}
	a, err := l.Events("A")
	if err != nil {
		t.Fatalf("host A's events: %v (serial log: %s)", err, filepath.Join(l.Run, "serial-A.log"))
	}
	b, _ := l.Events("B")
	l.step("timeline (host A's clock; B's own events in B's clock)")
	t0 := a[0].Time
	for _, e := range append(a, b...) {
		_, rest, _ := strings.Cut(e.Line, " ")
		l.step("  %8.1fs %s", e.Time.Sub(t0).Seconds(), rest)
	}
	if e, ok := Find(a, "FAIL"); ok {
		if r, err := l.Migration(); err == nil {
			l.step("co-migration's frames: %q; Domain M's remap at B: %q", r.Frames, r.Remap)
		}
		t.Fatalf("host A: %s", e.Line)
	}
	for _, where := range []string{"A", "B"} {
		f, ok := Find(a, "FOUND", "where="+where)
		if !ok {
			t.Errorf("Domain M did not find the marker planted at %s", where)
			continue
		}
		if _, ok := Find(a, "FRAME-OK", "where="+where, "gpa="+f.Args["gpa"]); !ok {
			t.Errorf("the marker Domain M found at %s (gpa %s) is not in dom0's view of that frame", where, f.Args["gpa"])
		}
		t.Logf("found at %s: gpa %s seed %s in domain %s; dom0's foreign map of the frame agrees", where, f.Args["gpa"], f.Args["seed"], f.Args["domid"])
	}
	r, err := l.Migration()
	if err != nil {
		t.Fatal(err)
	}
	l.step("co-migration (domainm-migrate migrate --xen): total %v; target migration %v, Domain M migration %v; waits P1 %v P2 %v P3 %v P4 %v; target downtime %v; monitoring gap %v; ids %v",
		r.Total, r.TargetMigration, r.DomMMigration, r.Waits[0], r.Waits[1], r.Waits[2], r.Waits[3], r.TargetDowntime, r.Gap, r.IDs)
	l.step("Domain M's remap at B: %s", r.Remap)
	if l.Supervisor && r.Remap == "" {
		// the supervisor logs the frame change and the fingerprint on its console
		// ("resume: xen frames"), it writes no domainm/remap
		l.step("Domain M's remap at B: in the supervisor's log (out-B/guest-domainm.log)")
	} else if strings.HasPrefix(r.Remap, "BEYOND-MIGRATION") || r.Remap == "" {
		t.Errorf("Domain M's remap at B: %q: want a frame change a migration explains", r.Remap)
	}
	l.step("the target's frames: %q", r.Frames)
	for _, c := range r.Timeline {
		l.step("  %8.1fs %-10s %-11s up=%-5v %s", c.Time.Sub(r.Start).Seconds(), c.Subject, c.Where, c.Up, c.What)
	}
	for _, c := range r.Timeline {
		if s, ok := l.SuspendRequested("A", r.IDs["src_target"]); ok && c.Where == "dst/target" && c.Up {
			l.step("target downtime from libxl's suspend request at A (xenstore watch) to the unpause at B: %v (of which xl migrate's suspend-to-end: %v)",
				c.Time.Sub(s).Round(time.Millisecond), r.TargetMigrationEnded.Sub(s).Round(time.Millisecond))
		}
	}
	if len(r.Violations) > 0 || !r.Gap.OK() {
		t.Errorf("invariant: %v (gap %v)", r.Timeline.Err(), r.Gap)
	}
	if r.IDs["dst_target"] == r.IDs["src_target"] || r.IDs["dst_domm"] == r.IDs["src_domm"] {
		t.Errorf("domain ids at B %v should differ from A's: the remap must be to the new ids", r.IDs)
	}
	checkRanges(t, l, a)
	if l.NFS {
		checkDisk(t, l, a)
	}
	if b, err := os.ReadFile(filepath.Join(l.Run, "out-A", "follow.log")); err == nil {
		l.step("dom0 A's domainm-xen follow: %s", strings.TrimSpace(string(b)))
	} else {
		t.Errorf("dom0 A's domainm-xen follow left no log: %v", err)
	}
	// B's follow, started by domainm-migrate with the grant there
	if b, err := os.ReadFile(filepath.Join(l.Run, "out-B", "follow.log")); err == nil {
		l.step("dom0 B's domainm-xen follow: %s", strings.TrimSpace(string(b)))
	}
	if e, ok := Find(a, "FOLLOW-B"); !ok || e.Args["equal"] != "yes" || e.Args["running"] != "yes" {
		t.Errorf("dom0 B's domainm-xen follow: want it running and domainm/frames equal to the target's p2m at B: %s", e.Line)
	}
}

// checkDisk: the disk check over NFS. Domain M recorded a baseline of the target's image
// at A and alerted the setuid file dom0 A planted into it (file-added, mode 4755, on its
// console at A), and after the co-migration the one B's dom0 planted (on its console at
// B); the timings are printed.
func checkDisk(t *testing.T, l *Lab, a []Event) {
	if e, ok := Find(a, "STORAGE", "where=A"); ok {
		l.step("storage at A: %s", e.Line)
	}
	for _, where := range []string{"A", "B"} {
		path := "/usr/bin/.xenlab-" + where
		as, err := l.ConsoleAlerts(where)
		if err != nil {
			t.Errorf("Domain M's console at %s: %v", where, err)
			continue
		}
		// Domain M's network and mount, as its init and mount-storage printed them
		if b, err := os.ReadFile(filepath.Join(l.Run, "out-"+where, "guest-domainm.log")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "DOMAINM-NET") || strings.Contains(line, "domainm-storage:") {
					l.step("  Domain M at %s: %s", where, strings.TrimSpace(line))
				}
			}
		}
		if where == "A" {
			b := With(as, "disk-baseline-created", "")
			if len(b) == 0 {
				t.Errorf("no disk-baseline-created alert on Domain M's console at A")
			} else {
				l.step("disk baseline at A: %s (%s)", b[0].Timestamp.Format(time.RFC3339Nano), b[0].Message)
				// the unpause of the Domain M that recorded it: the last one before (run
				// nfs-3 made the pair twice, its target having panicked while booting)
				var u *Event
				for i := range a {
					if a[i].Name == "DOMAINM-UNPAUSED" && a[i].Time.Before(b[0].Timestamp) {
						u = &a[i]
					}
				}
				if u != nil {
					l.step("  Domain M's unpause to its baseline of the image: %v (clocks of dom0 A and Domain M)", b[0].Timestamp.Sub(u.Time).Round(time.Millisecond))
				}
			}
		}
		f := With(as, "file-added", path)
		if len(f) != 1 {
			t.Errorf("Domain M's console at %s: %d file-added alerts of %s, want 1", where, len(f), path)
		} else if f[0].File.Mode != "4755" {
			t.Errorf("file-added %s: mode %q, want 4755: %s", path, f[0].File.Mode, f[0].Raw)
		}
		for _, o := range as {
			if strings.HasPrefix(o.Event.Action, "file-") && !strings.HasPrefix(o.File.Path, "/usr/bin/.xenlab-") {
				l.step("  other file alert at %s (not planted by the lab): %s", where, o.Raw)
			}
		}
		p, ok1 := Find(a, "DISK-PLANTED", "where="+where)
		s, ok0 := Find(a, "DISK-PLANT", "where="+where)
		e, ok2 := Find(a, "DISK-ALERT", "where="+where)
		if !ok0 || !ok1 || !ok2 {
			t.Errorf("disk check at %s: events plant %v planted %v alert %v", where, ok0, ok1, ok2)
			continue
		}
		l.step("disk check at %s: %s planted in %v (debugfs -w over NFS from dom0 %s), alerted %v after (dom0 A's clock; Domain M's alert at %s)",
			where, path, p.Time.Sub(s.Time).Round(time.Millisecond), where, e.Time.Sub(p.Time).Round(time.Millisecond), e.Args["at"])
		if len(f) == 1 {
			t.Logf("disk check over NFS at %s: %s", where, f[0].Message)
		}
	}
}

// checkRanges compares Domain M's ranges (what Xen's p2m maps) with the e820 map the
// toolstack gave the target (its kernel's boot log) and xl's memory size.
func checkRanges(t *testing.T, l *Lab, a []Event) {
	mon, _ := Find(a, "MONITORING", "where=A")
	// the rest of the line: the ranges are separated by spaces (Args holds the first)
	_, rs, _ := strings.Cut(mon.Line, "ranges=")
	ranges, err := ParseRanges(strings.Trim(rs, `"`))
	if err != nil || len(ranges) == 0 {
		t.Fatalf("Domain M's ranges %q: %v", rs, err)
	}
	f, err := os.Open(filepath.Join(l.Run, "out-A", "guest-target.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	usable, other, err := ParseE820(f)
	if err != nil || len(usable) == 0 {
		t.Fatalf("no e820 map in the target's console log: %v", err)
	}
	var xl []struct {
		Config struct {
			BInfo struct {
				MaxMemkb    uint64 `json:"max_memkb"`
				TargetMemkb uint64 `json:"target_memkb"`
			} `json:"b_info"`
		} `json:"config"`
	}
	b, err := os.ReadFile(filepath.Join(l.Run, "out-A", "xl-list-target.json"))
	if err == nil {
		err = json.Unmarshal(b, &xl)
	}
	if err != nil || len(xl) != 1 {
		t.Fatalf("xl list -l target: %v", err)
	}
	mem := xl[0].Config.BInfo.MaxMemkb << 10
	t.Logf("Domain M's ranges (Xen's p2m): %v (%d bytes); e820 usable %v (%d bytes), other %v; xl max_memkb %d",
		ranges, Size(ranges), usable, Size(usable), other, xl[0].Config.BInfo.MaxMemkb)
	if c := Covered(usable, ranges); c != Size(usable) {
		t.Errorf("Domain M maps %d of the %d usable bytes of the target's e820 map", c, Size(usable))
	}
	if Size(usable) > mem || Size(usable) < mem*9/10 {
		t.Errorf("e820 usable %d bytes vs xl's max_memkb %d KiB", Size(usable), mem>>10)
	}
	if extra := Size(ranges) - Covered(ranges, usable); extra > 0 {
		t.Logf("%d bytes mapped outside e820 RAM (in e820 reserved: %d): the toolstack's special pages and ACPI tables",
			extra, Covered(ranges, other))
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
