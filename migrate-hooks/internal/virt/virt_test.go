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
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/internal/cli"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
	"github.com/domainm/domainm/migrate-hooks/internal/virt"
	"github.com/domainm/domainm/migrate-hooks/internal/virt/virttest"
)

var (
	needle = []byte("DOMAINM-PLANTED-LIBVIRT-BEFORE-3b1e")                             // rule planted_before_migration
	after  = []byte("DOMAINM-PLANTED-AFTER-LIBVIRT-9d4c")                              // rule planted_at_destination
	view   = control.ResumeArgs{Source: "disk:" + virttest.ViewDevice, Layout: "flat"} // at both ends
)

// fixture: the lab (Domain M running the real supervisor, domainm run, on its view
// disk), the driver's hosts and the coordinator's client of the supervisor's control
// port at the source.
type fixture struct {
	lab      *virttest.Lab
	src, dst *virt.Host
	sup      *control.Client // the source's control port
	srcRAM   string          // the target's RAM file at the source (host path)
	leases   string          // the destination hook's lease folder
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
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("domain M's console (both ends):\n%s", f.lab.DomMConsole(12000))
		}
	})
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
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The guest answers once domainm runs; the port's socket exists from the start.
	if f.sup, err = control.Dial(ctx, f.lab.ControlSocket(f.lab.Src)); err != nil {
		t.Fatalf("the supervisor's control port: %v", err)
	}
	t.Cleanup(func() { f.sup.Close() })
	f.watching(t, f.lab.Src, f.sup, "src", false)
	return f
}

// handshake is the coordinator's handshake with the real supervisor: its control port
// at the source, and the destination QEMU's (a lazily connected client) for resume.
func (f *fixture) handshake(t *testing.T) *control.Handshake {
	dc := control.NewClient(f.lab.ControlSocket(f.lab.Dst))
	t.Cleanup(func() { dc.Close() })
	src, dst := view, view
	src.Target = control.Target{Name: f.lab.Target, Host: "src"}
	dst.Target = control.Target{Name: f.lab.Target, Host: "dst"}
	return &control.Handshake{Client: f.sup, DestClient: dc, Source: src, Dest: dst}
}

// status asks the supervisor at the other end of c.
func status(t *testing.T, c *control.Client) control.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Call(ctx, "status", nil)
	if err != nil {
		t.Fatalf("supervisor status: %v", err)
	}
	return r
}

// watching checks the real supervisor on d, through c: it monitors the target at host
// through the view disk, completes a memory pass after this call and still has the
// planted string's finding open; its alerts show the string matched (and, with
// wantAfter, the string planted at the destination) and never reported gone.
func (f *fixture) watching(t *testing.T, d *virttest.Daemon, c *control.Client, host string, wantAfter bool) control.Response {
	t.Helper()
	r := status(t, c)
	deadline := time.Now().Add(6 * time.Minute)
	// At startup the first pass may still run (or the view may not be there yet).
	for r.State != control.StateMonitoring && time.Now().Before(deadline) {
		time.Sleep(3 * time.Second)
		r = status(t, c)
	}
	if r.State != control.StateMonitoring || r.Target == nil || r.Target.Host != host || r.Source != view.Source {
		t.Errorf("supervisor on %s: %s; want monitoring %s at %s", d.Name, r.Raw, view.Source, host)
		return r
	}
	passes := r.Passes
	for (r.Passes <= passes || r.Findings == 0) && time.Now().Before(deadline) {
		time.Sleep(3 * time.Second)
		r = status(t, c)
	}
	if r.Passes <= passes || r.Findings == 0 {
		t.Errorf("supervisor on %s: no pass with the planted string's finding since the check began (passes %d then, now %s)", d.Name, passes, r.Raw)
	}
	want := map[string]bool{"planted_before_migration memory-match": true}
	if wantAfter {
		want["planted_at_destination memory-match"] = true
	}
	var got map[string]bool
	for time.Now().Before(deadline) {
		if got = f.alerts(t, d); hasAll(got, want) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if !hasAll(got, want) || got["planted_before_migration memory-match-gone"] {
		t.Errorf("supervisor on %s: alerts %v, want %v and no memory-match-gone", d.Name, got, want)
	}
	var took float64
	if r.Detail != nil {
		took = r.Detail.Memory.LastPassSeconds
	}
	t.Logf("supervisor on %s: state %s, target %+v, source %s, passes %d (last %.1f s), findings %d, epoch %d; checked in %v",
		d.Name, r.State, *r.Target, r.Source, r.Passes, took, r.Findings, r.Epoch, time.Since(deadline.Add(-6*time.Minute)).Round(time.Second))
	return r
}

func hasAll(got, want map[string]bool) bool {
	for k := range want {
		if !got[k] {
			return false
		}
	}
	return true
}

// alerts are the (rule, action) pairs of the supervisor's alert file on d.
func (f *fixture) alerts(t *testing.T, d *virttest.Daemon) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := f.lab.LabCommand(ctx, d, "alerts")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		var a struct {
			Rule  *struct{ Name string }  `json:"rule"`
			Event struct{ Action string } `json:"event"`
		}
		if json.Unmarshal([]byte(line), &a) == nil && a.Rule != nil {
			got[a.Rule.Name+" "+a.Event.Action] = true
		}
	}
	return got
}

// cutAfterPrepare cuts the proxied stream right after the supervisor answered prepare.
type cutAfterPrepare struct {
	*control.Handshake
	px *virttest.Proxy
}

func (c *cutAfterPrepare) Prepare(ctx context.Context) error {
	err := c.Handshake.Prepare(ctx)
	c.px.Cut()
	return err
}

// freezer stops domainm run inside Domain M (SIGSTOP, through the lab port) just
// before the coordinator's prepare, or just before its resume at the destination
// (Domain M then runs there); a supervisor frozen before prepare is woken (SIGCONT)
// when the coordinator asks whether it still monitors, during the rollback.
type freezer struct {
	*control.Handshake
	f        *fixture
	at       string // "prepare" or "resume"
	frozen   *virttest.Daemon
	frozenAt time.Time
}

// freeze stops the supervisor on d. Its own deadline: the coordinator's (the handshake
// timeout) is for the supervisor, and a guest slowed by a migration under TCG may take
// seconds to answer on the lab port.
func (z *freezer) freeze(d *virttest.Daemon) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	z.frozen = d // woken whatever the answer
	out, err := z.f.lab.LabCommand(ctx, d, "stop")
	if err != nil || !strings.Contains(out, "stopped") {
		return fmt.Errorf("freezing the supervisor on %s: %q, %v", d.Name, out, err)
	}
	z.frozenAt = time.Now()
	return nil
}

func (z *freezer) Prepare(ctx context.Context) error {
	if z.at == "prepare" {
		if err := z.freeze(z.f.lab.Src); err != nil {
			return err
		}
	}
	return z.Handshake.Prepare(ctx)
}

func (z *freezer) Resume(ctx context.Context) error {
	if z.at == "resume" {
		if err := z.freeze(z.f.lab.Dst); err != nil {
			return err
		}
	}
	return z.Handshake.Resume(ctx)
}

func (z *freezer) Monitoring(ctx context.Context) (bool, error) {
	if z.at == "prepare" && z.frozen != nil {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := z.f.lab.LabCommand(c, z.frozen, "cont"); err != nil || !strings.Contains(out, "continued") {
			return false, fmt.Errorf("waking the supervisor: %q, %v", out, err)
		}
		z.frozen = nil
	}
	return z.Handshake.Monitoring(ctx)
}

// pair builds the two migrations; via, if set, routes a stream through a proxy.
func (f *fixture) pair(t *testing.T, viaT, viaM string) (syncpoint.Side, syncpoint.Side, *virt.Migration, *virt.Migration) {
	tm := &virt.Migration{Name: f.lab.Target, Src: f.src, Dst: f.dst, Via: viaT}
	mm := &virt.Migration{Name: f.lab.DomM, Src: f.src, Dst: f.dst, Via: viaM, DestXML: virt.ViewPath(tm)}
	ts := syncpoint.Side{Src: tm.Source(), Dst: tm.Destination(), URI: listenURI(t), MemBytes: virttest.TargetMiB << 20}
	ms := syncpoint.Side{Src: mm.Source(), Dst: mm.Destination(), URI: listenURI(t), MemBytes: virttest.DomMMiB << 20}
	return ts, ms, tm, mm
}

func (f *fixture) run(t *testing.T, ts, ms syncpoint.Side, sup syncpoint.Supervisor, cfg syncpoint.Config) (*syncpoint.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg.Poll = virt.Poll
	if cfg.Handshake == 0 {
		cfg.Handshake = 10 * time.Second
	}
	r, err := syncpoint.Run(ctx, ts, ms, sup, cfg)
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
// back: both VMs run at the source, nothing is left at the destination, the real
// supervisor monitors the target at the source through its view disk and, in a pass
// made after the failure, still finds the string planted there.
func (f *fixture) wantRolledBack(t *testing.T, r *syncpoint.Result, err error, phase string) control.Response {
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
	return f.watching(t, f.lab.Src, f.sup, "src", false)
}

// TestCoMigrateLibvirt boots one pair under the source libvirtd, Domain M running the
// real supervisor (domainm run on the view disk, answering on its virtio-serial port),
// and co-migrates it through the driver; the failure cases leave it rolled back at the
// source, so they run first on the same pair, and the operator's command last.
func TestCoMigrateLibvirt(t *testing.T) {
	if testing.Short() {
		t.Skip("boots two libvirt-managed VMs under TCG, the real supervisor in one (about 8 minutes)")
	}
	f := newFixture(t)

	// A lone migration, not leased by domainm-migrate: the destination's hook refuses it
	// at Prepare3; nothing moved.
	t.Run("hook refuses unleased", func(t *testing.T) {
		ts, ms, _, _ := f.pair(t, "", "")
		r, err := f.run(t, ts, ms, f.handshake(t), syncpoint.Config{Mode: syncpoint.Sync, P1: 2 * time.Minute})
		if err == nil || !strings.Contains(err.Error(), "hook") {
			t.Errorf("want the hook's refusal, got %v", err)
		}
		f.wantRolledBack(t, r, err, "setup")
	})

	// The target's destination QEMU dies during pre-copy: its Perform3 fails, Domain M's
	// migration is aborted (retried until its background Perform3 has a job: an abort that
	// came first once let Domain M complete unheld, a 248 ms gap), both keep running at the
	// source; the supervisor was never prepared (its epoch did not move).
	t.Run("destination dies", func(t *testing.T) {
		f.lease(t)
		ts, ms, _, _ := f.pair(t, "", "")
		epoch := status(t, f.sup).Epoch
		// Once both streams run (Domain M's destination opened the target's RAM file).
		whenEvent(t, ms.Src, migration("active"), func() {
			time.Sleep(300 * time.Millisecond)
			if pid, ok := f.lab.Dst.QEMUPids()["target"]; ok {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		})
		// 16 MiB/s: the target's stream (its filled RAM) lasts past the kill.
		r, err := f.run(t, ts, ms, f.handshake(t), syncpoint.Config{Mode: syncpoint.Sync, P1: 2 * time.Minute, MaxBandwidth: 16 << 20})
		if st := f.wantRolledBack(t, r, err, "P1"); st.Epoch != epoch {
			t.Errorf("supervisor epoch %d, was %d: it was prepared or resumed", st.Epoch, epoch)
		}
	})

	// Domain M's stream breaks once the target has stopped and the supervisor is
	// quiesced: Domain M stays (or is put back) at the source, the supervisor resumes
	// there, then the target is resumed there by Confirm3 cancelled, and its destination
	// copy destroyed.
	t.Run("stream breaks", func(t *testing.T) {
		f.lease(t)
		ts, ms, _, mm := f.pair(t, "", "")
		px, via := virttest.NewProxy(t, ms.URI)
		mm.Via = via
		// Cut once the supervisor has answered prepare: the coordinator is then past P1
		// for sure (a cut at the target's STOP event could beat the coordinator's own
		// poll, which then saw Domain M fail during P1).
		r, err := f.run(t, ts, ms, &cutAfterPrepare{f.handshake(t), px}, syncpoint.Config{Mode: syncpoint.Sync, P1: 2 * time.Minute})
		if err == nil {
			t.Fatal("co-migration succeeded through a cut stream")
		}
		var se *syncpoint.Error
		if errors.As(err, &se) && se.Phase == "P1" {
			t.Fatalf("failed at P1 (%v): the cut came too early", err)
		}
		f.wantRolledBack(t, r, err, se.Phase)
	})

	// domainm run is frozen (SIGSTOP) when the target has stopped, just before prepare:
	// prepare times out, Domain M's migration is aborted (it still runs at the source);
	// the coordinator's status question wakes the supervisor (SIGCONT). Woken, it reads
	// the abandoned prepare (a virtio-serial port is one byte stream: the coordinator's
	// reconnection does not separate it from the new requests, and timeout_ms counts
	// from its reading) and carries it out: quiesced (or, read too late under load,
	// refuses it as expired and goes on monitoring). Its late answer arrives first on
	// the coordinator's new connection; the control client skips it (before it did, the
	// id mismatch failed the rollback and left the target paused for the operator), and
	// the coordinator resumes the supervisor (when it quiesced) and the target at the
	// source: rolled back.
	t.Run("supervisor silent at prepare", func(t *testing.T) {
		f.lease(t)
		ts, ms, _, _ := f.pair(t, "", "")
		z := &freezer{Handshake: f.handshake(t), f: f, at: "prepare"}
		r, err := f.run(t, ts, ms, z, syncpoint.Config{Mode: syncpoint.Sync, P1: 2 * time.Minute, Handshake: 3 * time.Second})
		if z.frozenAt.IsZero() {
			t.Fatalf("the supervisor was never frozen: %v", err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want prepare's deadline", err)
		}
		f.wantRolledBack(t, r, err, "P1")
	})

	// domainm run answered prepare, Domain M migrated and runs at the destination, where
	// the supervisor is frozen just before resume: resume times out (P4). The coordinator
	// suspends Domain M there and cancels its migration (Confirm3 cancelled resumes the
	// source copy, whose supervisor is quiesced, not frozen; the frozen destination copy
	// is destroyed), resumes the supervisor at the source, then cancels the target's
	// (Confirm3 cancelled: it runs at the source, its paused destination copy destroyed).
	t.Run("supervisor silent at resume", func(t *testing.T) {
		f.lease(t)
		ts, ms, _, _ := f.pair(t, "", "")
		z := &freezer{Handshake: f.handshake(t), f: f, at: "resume"}
		r, err := f.run(t, ts, ms, z, syncpoint.Config{Mode: syncpoint.Sync, P1: 2 * time.Minute, Handshake: 3 * time.Second})
		if z.frozenAt.IsZero() {
			t.Fatalf("the supervisor was never frozen: %v", err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want resume's deadline", err)
		}
		f.wantRolledBack(t, r, err, "P4")
		var prepared, resumedAtSource bool
		for _, c := range r.Timeline {
			prepared = prepared || c.Subject == syncpoint.SubjectSupervisor && c.What == "prepare sent"
			resumedAtSource = resumedAtSource || prepared && c.What == "resume answered (source)"
			t.Logf("timeline %s %s %s up=%v %s", c.Time.Format("15:04:05.000"), c.Subject, c.Where, c.Up, c.What)
		}
		if !resumedAtSource {
			t.Errorf("the supervisor was not prepared and then resumed at the source")
		}
	})

	// The operator's command: domainm-migrate migrate --libvirt (leases taken by the
	// command itself), the supervisor reached on its control port at each end.
	t.Run("migrates", func(t *testing.T) {
		f.sup.Close() // a port's host end takes one client: the command's
		var out, errOut strings.Builder
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		code := cli.Main(ctx, cli.Env{Stdout: &out, Stderr: &errOut}, "domainm-migrate", []string{"migrate",
			"--libvirt", f.lab.Src.URI(), "--dest", f.lab.Dst.URI(), "--target", f.lab.Target, "--domm", f.lab.DomM,
			"--control", f.lab.ControlSocket(f.lab.Src), "--control-dst", f.lab.ControlSocket(f.lab.Dst),
			"--src-ram", view.Source, "--dst-ram", view.Source, "--lease-dir", f.leases,
			"--target-uri", listenURI(t), "--domm-uri", listenURI(t), "--json", "-v"})
		t.Logf("domainm-migrate: exit %d\n%s", code, errOut.String())
		var r syncpoint.Result
		if err := json.Unmarshal([]byte(out.String()), &r); err != nil {
			t.Fatalf("--json output: %v\n%s", err, out.String())
		}
		t.Logf("CLI: total %v waits P1 %v P2 %v P3 %v P4 %v; target downtime %v; domain M downtime %v; P1 margin %v; gap %v",
			r.Total, r.Waits[0], r.Waits[1], r.Waits[2], r.Waits[3], r.TargetDowntime, r.DomMDowntime, r.P1Margin, r.Gap)
		logP4(t, errOut.String(), &r)
		if code != cli.ExitOK {
			t.Fatalf("exit %d, want 0", code)
		}
		if gap, ok := r.Gap.Get(); !ok || gap != 0 || len(r.Violations) > 0 {
			t.Errorf("monitoring gap %v, violations %v", r.Gap, r.Violations)
		}
		f.states(t, map[string]string{"dst/target": "running", "dst/domm": "running", "src/target": "shutoff", "src/domm": "shutoff"})
		c, err := control.Dial(ctx, f.lab.ControlSocket(f.lab.Dst))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		f.watching(t, f.lab.Dst, c, "dst", false)
		plant(t, f.lab.TargetRAM(t, f.lab.Dst), (virttest.TargetMiB-5)<<20, after)
		f.watching(t, f.lab.Dst, c, "dst", true)
		if leases, _ := filepath.Glob(filepath.Join(f.leases, "*.lease")); len(leases) > 0 {
			t.Errorf("leases left behind: %v", leases)
		}
		// The 4096-byte-sector view (the same RAM file, rewritten for the destination
		// too), read once by domainm scan-memory with the disk: source.
		bs, err := f.lab.LabCommand(ctx, f.lab.Dst, "blocksize")
		if err != nil || !strings.Contains(bs, "domainm-view 512\n") || !strings.Contains(bs, "domainm-view-4k 4096\n") {
			t.Errorf("view disks' logical block sizes: %q, %v; want 512 and 4096", bs, err)
		}
		t0 := time.Now()
		// The last 8 MiB of the target's RAM, where both strings were planted.
		top := fmt.Sprintf("ranges:%#x+0x800000@%#x", (virttest.TargetMiB-8)<<20, (virttest.TargetMiB-8)<<20)
		scan, err := f.lab.LabCommand(ctx, f.lab.Dst, "scan "+virttest.View4K+" "+top)
		t.Logf("scan-memory of the 4K view (%v):\n%s", time.Since(t0).Round(time.Millisecond), scan)
		if err != nil || !strings.Contains(scan, "planted_before_migration") || !strings.Contains(scan, "planted_at_destination") {
			t.Errorf("scan-memory of the 4096-byte-sector view finds %q, %v; want both planted strings", scan, err)
		}
	})
}

// logP4 lays out P4, from the target's arrival at the destination (QEMU's MIGRATION
// completed) to its resume there, from the driver's log (-v) and the result's timeline.
func logP4(t *testing.T, log string, r *syncpoint.Result) {
	re := regexp.MustCompile(`msg=(?:"([^"]*)"|(\S+)) .*where=(\S+).* at=(\S+)`)
	type mark struct {
		at   time.Time
		what string
	}
	var marks []mark
	var arrived time.Time
	for _, line := range strings.Split(log, "\n") {
		sm := re.FindStringSubmatch(line)
		if sm == nil {
			continue
		}
		m := []string{sm[0], sm[1] + sm[2], sm[3], sm[4]}
		if !strings.HasPrefix(m[2], "dst/") && !strings.Contains(m[1], "Perform3") {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[3])
		if err != nil {
			continue
		}
		if m[1] == "migration completed" && m[2] == "dst/target" {
			arrived = at
		}
		marks = append(marks, mark{at, m[1] + " " + m[2]})
	}
	for _, c := range r.Timeline {
		if strings.HasPrefix(c.Where, "dst/") || c.Subject == syncpoint.SubjectSupervisor {
			marks = append(marks, mark{c.Time, fmt.Sprintf("timeline %s %s", c.Where, c.What)})
		}
	}
	if arrived.IsZero() {
		t.Logf("P4 breakdown: no arrival of the target in the log")
		return
	}
	sort.Slice(marks, func(i, j int) bool { return marks[i].at.Before(marks[j].at) })
	var b strings.Builder
	for _, m := range marks {
		fmt.Fprintf(&b, "  %+8.1f ms  %s\n", float64(m.at.Sub(arrived).Microseconds())/1000, m.what)
	}
	t.Logf("P4 breakdown (from the target's arrival at the destination):\n%s", b.String())
}
