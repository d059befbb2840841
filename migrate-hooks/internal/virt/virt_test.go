package virt_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/internal/cli"
	"github.com/domainm/domainm/migrate-hooks/internal/controltest"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
	"github.com/domainm/domainm/migrate-hooks/internal/virt"
	"github.com/domainm/domainm/migrate-hooks/internal/virt/virttest"
)

var needle = []byte("DOMAINM-PLANTED-LIBVIRT-BEFORE-3b1e")

// fixture: the lab, the driver's hosts and a stand-in supervisor watching the target's
// RAM file at the source.
type fixture struct {
	lab      *virttest.Lab
	src, dst *virt.Host
	sup      *controltest.Supervisor
	hs       *destHandshake
	srcRAM   string
	leases   string // the destination hook's lease folder
	sock     string // the supervisor's control socket
}

// TestMain: run as the destination libvirtd's qemu hook (hookScript), the test binary is
// domainm-migrate's libvirt hook.
func TestMain(m *testing.M) {
	if os.Getenv("DOMAINM_VIRT_TEST_HOOK") == "1" {
		os.Exit(cli.Main(context.Background(), cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, "qemu", os.Args[1:]))
	}
	os.Exit(m.Run())
}

// hookScript runs this test binary as domainm-migrate's libvirt hook with leases in dir
// (libvirt passes hooks only a few environment variables).
func hookScript(t *testing.T, dir string) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("#!/bin/sh\nexport DOMAINM_VIRT_TEST_HOOK=1 DOMAINM_LEASE_DIR=%s\nexec %s \"$@\"\n", dir, exe)
}

// lease announces a co-migration of both VMs to the hook, as domainm-migrate migrate does.
func (f *fixture) lease(t *testing.T) {
	for _, n := range []string{f.lab.Target, f.lab.DomM} {
		b := fmt.Sprintf(`{"name":%q,"pid":%d,"expires":%q}`, n, os.Getpid(), time.Now().Add(10*time.Minute).Format(time.RFC3339Nano))
		p := filepath.Join(f.leases, n+".lease")
		if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(p) })
	}
}

func newFixture(t *testing.T) *fixture {
	leases := t.TempDir()
	f := &fixture{lab: virttest.StartLab(t, hookScript(t, leases)), leases: leases}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var err error
	if f.src, err = virt.Dial("src", f.lab.Src.URI(), log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.src.Close() })
	if f.dst, err = virt.Dial("dst", f.lab.Dst.URI(), log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.dst.Close() })
	f.srcRAM = f.lab.TargetRAM(t, f.lab.Src)
	plant(t, f.srcRAM, (virttest.TargetMiB-3)<<20, needle)
	f.sock = filepath.Join(t.TempDir(), "control.sock")
	sock := f.sock
	if f.sup, err = controltest.Listen(sock, f.srcRAM); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.sup.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := control.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f.hs = &destHandshake{Handshake: control.Handshake{Client: c,
		Source: control.ResumeArgs{Source: "file:" + f.srcRAM, Layout: "flat", Target: control.Target{Name: "target", Host: "src"}},
		Dest:   control.ResumeArgs{Layout: "flat", Target: control.Target{Name: "target", Host: "dst"}}}, f: f, t: t}
	return f
}

// destHandshake names the destination's RAM file at resume time: libvirt names it after
// the domain id the destination gave the target. (Inside Domain M the view is
// /dev/pmem0 at both ends; the stand-in supervisor reads the host's file.)
type destHandshake struct {
	control.Handshake
	f *fixture
	t *testing.T
}

func (h *destHandshake) Resume(ctx context.Context) error {
	h.Dest.Source = "file:" + h.f.lab.TargetRAM(h.t, h.f.lab.Dst)
	return h.Handshake.Resume(ctx)
}

// pair builds the two migrations; via, if set, routes a stream through a proxy.
func (f *fixture) pair(t *testing.T, viaT, viaM string) (syncpoint.Side, syncpoint.Side, *virt.Migration, *virt.Migration) {
	tm := &virt.Migration{Name: f.lab.Target, Src: f.src, Dst: f.dst, Via: viaT}
	mm := &virt.Migration{Name: f.lab.DomM, Src: f.src, Dst: f.dst, Via: viaM, DestXML: virt.ViewPath(tm)}
	ts := syncpoint.Side{Src: tm.Source(), Dst: tm.Destination(), URI: listenURI(t), MemBytes: virttest.TargetMiB << 20}
	ms := syncpoint.Side{Src: mm.Source(), Dst: mm.Destination(), URI: listenURI(t), MemBytes: virttest.DomMMiB << 20}
	return ts, ms, tm, mm
}

func (f *fixture) run(t *testing.T, ts, ms syncpoint.Side, cfg syncpoint.Config) (*syncpoint.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg.Poll = virt.Poll
	if cfg.Handshake == 0 {
		cfg.Handshake = 10 * time.Second
	}
	r, err := syncpoint.Run(ctx, ts, ms, f.hs, cfg)
	t.Logf("mode %s total %v waits P1 %v P2 %v P3 %v P4 %v; target downtime %v (sync wait %v); domain M downtime %v; P1 margin %v, detect %v; held %v; gap %v; err %v",
		r.Mode, r.Total, r.Waits[0], r.Waits[1], r.Waits[2], r.Waits[3], r.TargetDowntime, r.SyncWait, r.DomMDowntime, r.P1Margin, r.P1Detect, r.Held, r.Gap, err)
	if len(r.Violations) > 0 {
		t.Errorf("invariant violated: %+v", r.Violations)
	}
	if gap, ok := r.Gap.Get(); !ok || gap != 0 {
		t.Errorf("monitoring gap %v, want 0", r.Gap)
	}
	return r, err
}

// states checks where each domain runs now.
func (f *fixture) states(t *testing.T, want map[string]string) {
	t.Helper()
	for key, w := range want {
		host, name, _ := strings.Cut(key, "/")
		d := f.lab.Src
		if host == "dst" {
			d = f.lab.Dst
		}
		if got := d.State(t, name); got != w {
			t.Errorf("%s: %s, want %s", key, got, w)
		}
	}
}

func (f *fixture) supervisorAt(t *testing.T, ram string) {
	t.Helper()
	if st, src := f.sup.State(); st != "monitoring" || src != ram {
		t.Errorf("supervisor %s %q, want monitoring %s", st, src, ram)
	}
}

func listenURI(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprintf("tcp://%s", ln.Addr())
}

func plant(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// whenEvent calls fn once vm records a matching event from index from on.
func whenEvent(t *testing.T, vm syncpoint.VM, match func(syncpoint.Event) bool, fn func()) {
	from := len(vm.Events())
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if _, _, err := vm.WaitEvent(ctx, from, match); err == nil {
			fn()
		}
	}()
}

func migration(status string) func(syncpoint.Event) bool {
	return func(e syncpoint.Event) bool { return e.Name == "MIGRATION" && e.Status == status }
}

// wantRolledBack checks every party after a failed co-migration that must have rolled
// back: both VMs run at the source, nothing is left at the destination, the supervisor
// watches the source's RAM and still sees the string planted there.
func (f *fixture) wantRolledBack(t *testing.T, r *syncpoint.Result, err error, phase string) {
	t.Helper()
	var se *syncpoint.Error
	if !errors.As(err, &se) {
		t.Fatalf("want a *syncpoint.Error, got %v", err)
	}
	if se.Phase != phase || !r.RolledBack {
		t.Errorf("failed at %s (%q), want %s and rolled back", se.Phase, se.Outcome, phase)
	}
	// The source resumes asynchronously after a failed Perform3.
	deadline := time.Now().Add(20 * time.Second)
	for f.lab.Src.State(t, "target") != "running" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	f.states(t, map[string]string{"src/target": "running", "src/domm": "running", "dst/target": "absent", "dst/domm": "absent"})
	f.supervisorAt(t, f.srcRAM)
	if found, err := f.sup.Find(needle); !found {
		t.Errorf("supervisor does not see the planted string at the source: %v", err)
	}
}

// TestCoMigrateLibvirt boots one pair under the source libvirtd and co-migrates it
// through the driver; the failure cases leave it rolled back at the source, so they run
// first on the same pair, and the successful migration last.
func TestCoMigrateLibvirt(t *testing.T) {
	if testing.Short() {
		t.Skip("boots two libvirt-managed VMs under TCG (3-4 minutes)")
	}
	f := newFixture(t)

	// The target's destination QEMU dies during pre-copy: its Perform3 fails, Domain M's
	// migration is aborted (retried until its background Perform3 has a job: an abort that
	// came first once let Domain M complete unheld, a 248 ms gap), both keep running at the
	// source; the supervisor was never prepared.
	// A lone migration, not leased by domainm-migrate: the destination's hook refuses it
	// at Prepare3; nothing moved.
	t.Run("hook refuses unleased", func(t *testing.T) {
		ts, ms, _, _ := f.pair(t, "", "")
		r, err := f.run(t, ts, ms, syncpoint.Config{Mode: syncpoint.Sync, P1: 2 * time.Minute})
		if err == nil || !strings.Contains(err.Error(), "hook") {
			t.Errorf("want the hook's refusal, got %v", err)
		}
		f.wantRolledBack(t, r, err, "setup")
	})

	t.Run("destination dies", func(t *testing.T) {
		f.lease(t)
		ts, ms, _, _ := f.pair(t, "", "")
		// Once both streams run (Domain M's destination opened the target's RAM file).
		whenEvent(t, ms.Src, migration("active"), func() {
			time.Sleep(300 * time.Millisecond)
			if pid, ok := f.lab.Dst.QEMUPids()["target"]; ok {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		r, err := f.run(t, ts, ms, syncpoint.Config{Mode: syncpoint.Sync, P1: 2 * time.Minute})
		f.wantRolledBack(t, r, err, "P1")
		for _, c := range f.sup.Changes() {
			if c.State != "monitoring" {
				t.Errorf("supervisor was %s: it must never have been prepared", c.State)
			}
		}
	})

	// Domain M's stream breaks once the target has stopped: Domain M stays (or is put
	// back) at the source, the supervisor resumes there, then the target is resumed there
	// by Confirm3 cancelled, and its destination copy destroyed.
	t.Run("stream breaks", func(t *testing.T) {
		f.lease(t)
		ts, ms, _, mm := f.pair(t, "", "")
		px, via := virttest.NewProxy(t, ms.URI)
		mm.Via = via
		whenEvent(t, ts.Src, func(e syncpoint.Event) bool { return e.Name == "STOP" }, px.Cut)
		r, err := f.run(t, ts, ms, syncpoint.Config{Mode: syncpoint.Sync, P1: 2 * time.Minute})
		if err == nil {
			t.Fatal("co-migration succeeded through a cut stream")
		}
		var se *syncpoint.Error
		if errors.As(err, &se) && se.Phase == "P1" {
			t.Fatalf("failed at P1 (%v): the cut came too early", err)
		}
		f.wantRolledBack(t, r, err, se.Phase)
	})

	// The supervisor does not answer prepare: Domain M's migration is aborted (it still
	// runs at the source), the supervisor says it is monitoring, so the target is resumed
	// at the source.
	t.Run("supervisor silent", func(t *testing.T) {
		f.lease(t)
		ts, ms, _, _ := f.pair(t, "", "")
		f.sup.Hang("prepare")
		r, err := f.run(t, ts, ms, syncpoint.Config{Mode: syncpoint.Sync, P1: 2 * time.Minute, Handshake: 3 * time.Second})
		f.sup.Unhang("prepare")
		f.wantRolledBack(t, r, err, "P1")
	})

	// The operator's command: domainm-migrate migrate --libvirt (leases taken by the
	// command itself). The stand-in supervisor reads host files: the destination's "view
	// device" is a symlink the test points at the destination target's RAM file once
	// libvirt has named it (inside Domain M it is the same disk at both ends).
	t.Run("migrates", func(t *testing.T) {
		view := filepath.Join(t.TempDir(), "dst-view")
		go followTarget(t, f, view)
		var out, errOut strings.Builder
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		code := cli.Main(ctx, cli.Env{Stdout: &out, Stderr: &errOut}, "domainm-migrate", []string{"migrate",
			"--libvirt", f.lab.Src.URI(), "--dest", f.lab.Dst.URI(), "--target", f.lab.Target, "--domm", f.lab.DomM,
			"--control", f.sock, "--src-ram", f.srcRAM, "--dst-ram", view, "--lease-dir", f.leases,
			"--target-uri", listenURI(t), "--domm-uri", listenURI(t), "--json", "-v"})
		t.Logf("domainm-migrate: exit %d\n%s", code, errOut.String())
		var r syncpoint.Result
		if err := json.Unmarshal([]byte(out.String()), &r); err != nil {
			t.Fatalf("--json output: %v\n%s", err, out.String())
		}
		t.Logf("CLI: total %v waits P1 %v P2 %v P3 %v P4 %v; target downtime %v; domain M downtime %v; P1 margin %v; gap %v",
			r.Total, r.Waits[0], r.Waits[1], r.Waits[2], r.Waits[3], r.TargetDowntime, r.DomMDowntime, r.P1Margin, r.Gap)
		if code != cli.ExitOK {
			t.Fatalf("exit %d, want 0", code)
		}
		if gap, ok := r.Gap.Get(); !ok || gap != 0 || len(r.Violations) > 0 {
			t.Errorf("monitoring gap %v, violations %v", r.Gap, r.Violations)
		}
		f.states(t, map[string]string{"dst/target": "running", "dst/domm": "running", "src/target": "shutoff", "src/domm": "shutoff"})
		f.supervisorAt(t, view)
		if found, err := f.sup.Find(needle); !found {
			t.Errorf("the string planted before migration is not in the destination's RAM: %v", err)
		}
		after := []byte("DOMAINM-PLANTED-AFTER-LIBVIRT-9d4c")
		plant(t, f.lab.TargetRAM(t, f.lab.Dst), 40<<20, after)
		if found, err := f.sup.Find(after); !found {
			t.Errorf("the string planted after migration is not found from the destination: %v", err)
		}
		if leases, _ := filepath.Glob(filepath.Join(f.leases, "*.lease")); len(leases) > 0 {
			t.Errorf("leases left behind: %v", leases)
		}
	})
}

// followTarget points link at the destination target's RAM file once it exists.
func followTarget(t *testing.T, f *fixture, link string) {
	lv := f.lab.Dst.Connect(t)
	for range 3000 {
		if d, err := lv.DomainLookupByName(f.lab.Target); err == nil && d.ID > 0 {
			os.Symlink(f.lab.Dst.Outside(virttest.RAMPath(d.ID, f.lab.Target)), link)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
