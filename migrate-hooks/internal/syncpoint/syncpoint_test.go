package syncpoint_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/domainm/domainm/image/qemu"
	"github.com/domainm/domainm/image/testenv"
	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/internal/controltest"
	"github.com/domainm/domainm/migrate-hooks/internal/host"
	"github.com/domainm/domainm/migrate-hooks/internal/lab"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

var needle = []byte("DOMAINM-PLANTED-7f3a9c-BEFORE-MIGRATION")

// fixture is a pair at the source, its destination copies and a stand-in supervisor.
type fixture struct {
	src, dst *host.Local
	pair     *lab.Pair
	t, m     syncpoint.Side
	sup      *controltest.Supervisor
	hs       *control.Handshake
}

func accel(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := qemu.FirmwareAccel(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newFixture(t *testing.T, targetMiB, dommMiB int) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := newPair(ctx, t, "domainm-sp-"+filepath.Base(t.Name())+"-", targetMiB, dommMiB, int64(targetMiB-3)<<20)
	sock := filepath.Join(t.TempDir(), "control.sock")
	var err error
	f.sup, err = controltest.Listen(sock, f.pair.Target.RAMFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.sup.Close)
	c, err := control.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f.hs = lab.Handshake(c, f.src, f.dst, "target")
	return f
}

// newPair starts the pair at the source (names prefixed with prefix) with the needle
// planted in the target's RAM at plantAt, and their destination copies: a fixture
// without a supervisor.
func newPair(ctx context.Context, t *testing.T, prefix string, targetMiB, dommMiB int, plantAt int64) *fixture {
	t.Helper()
	a := accel(t)
	f := &fixture{}
	f.src = newHostT(t, "src", prefix)
	f.dst = newHostT(t, "dst", prefix)
	var err error
	f.pair, err = lab.StartSource(ctx, f.src, lab.NewSpec(targetMiB, dommMiB, a))
	if err != nil {
		t.Fatal(err)
	}
	plant(t, f.pair.Target.RAMFile, plantAt, needle)
	f.t, f.m, err = f.pair.Destination(ctx, f.dst)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func newHostT(t *testing.T, name, prefix string) *host.Local {
	h := &host.Local{Name: name, Dir: t.TempDir(), Prefix: prefix}
	t.Cleanup(func() {
		h.Close()
		if t.Failed() { // QEMU's own words on what went wrong
			files, _ := filepath.Glob(filepath.Join(h.Dir, "*.stderr"))
			for _, f := range files {
				if b, _ := os.ReadFile(f); len(b) > 0 {
					t.Logf("%s:\n%s", filepath.Base(f), b)
				}
			}
		}
	})
	return h
}

// plant writes b into a guest's RAM file at off.
var plant = testenv.WriteAt

func running(t *testing.T, vm syncpoint.VM) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	up, err := vm.Running(ctx)
	if err != nil {
		t.Fatalf("%s: %v", vm.Where(), err)
	}
	return up
}

func logResult(t *testing.T, r *syncpoint.Result) {
	t.Helper()
	t.Logf("mode %s total %v waits P1 %v P2 %v P3 %v P4 %v; target downtime %v (sync wait %v); domain M downtime %v; P1 margin %v, P1 detect %v; held %v; gap %v",
		r.Mode, r.Total, r.Waits[0], r.Waits[1], r.Waits[2], r.Waits[3], r.TargetDowntime, r.SyncWait, r.DomMDowntime, r.P1Margin, r.P1Detect, r.Held, r.Gap)
}

// checkInvariant runs on every test migration.
func checkInvariant(t *testing.T, r *syncpoint.Result) {
	t.Helper()
	if err := r.Timeline.Err(); err != nil {
		for _, c := range r.Timeline {
			t.Logf("  %s %-10s %-12s up=%v %s", c.Time.Format("15:04:05.000000"), c.Subject, c.Where, c.Up, c.What)
		}
		t.Errorf("invariant: %v", err)
	}
}

func TestCoMigrationSync(t *testing.T) {
	for _, tc := range []struct {
		name            string
		targetMiB, domm int
		mode            syncpoint.Mode
	}{
		{"domm-smaller", 256, 64, syncpoint.Sync},
		{"target-smaller", 64, 256, syncpoint.Sync},
		{"paced", 64, 256, syncpoint.Paced},
		// Xen's order (the target first, Domain M after its last copy), on QEMU
		{"sequential", 64, 256, syncpoint.Sequential},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.targetMiB, tc.domm)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cfg := syncpoint.Config{Mode: tc.mode, LinkBandwidth: 512 << 20}
			r, err := syncpoint.Run(ctx, f.t, f.m, f.hs, cfg)
			logResult(t, r)
			checkInvariant(t, r)
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := r.P1Margin.Get(); !ok || d <= 0 {
				t.Errorf("P1 margin %v: domain M must stop after the target", r.P1Margin)
			}
			if tc.mode == syncpoint.Sequential {
				// Domain M's whole migration lies inside the target's downtime.
				dm, _ := r.DomMDowntime.Get()
				td, _ := r.TargetDowntime.Get()
				if m, _ := r.P1Margin.Get(); m+dm > td {
					t.Errorf("domain M stopped %v after the target and was down %v, beyond the target's downtime %v", m, dm, td)
				}
			}
			if !running(t, f.t.Dst) || !running(t, f.m.Dst) {
				t.Errorf("target and domain M must run at the destination")
			}
			st, src := f.sup.State()
			if st != "monitoring" || src != f.dst.RAMFile("target") {
				t.Errorf("supervisor %s %s, want monitoring %s", st, src, f.dst.RAMFile("target"))
			}
			found, err := f.sup.Find(needle)
			if err != nil || !found {
				t.Errorf("supervisor at the destination: planted string found=%v, %v", found, err)
			}
		})
	}
}

// TestCoMigrationThereAndBack migrates a pair and then migrates it back: the processes
// of the second migration carry the events of the first, which must not be mistaken
// for the second's (P2 would end at once).
func TestCoMigrationThereAndBack(t *testing.T) {
	f := newFixture(t, 64, 256)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, hosts := range [][2]*host.Local{{f.src, f.dst}, {f.dst, f.src}} {
		src, dst := hosts[0], hosts[1]
		if i == 1 {
			for _, vm := range []*host.VM{f.pair.Target, f.pair.DomM} {
				vm.Kill()
				os.Remove(vm.RAMFile)
			}
			f.pair = &lab.Pair{Spec: f.pair.Spec, Src: src, Target: f.t.Dst.(*host.VM), DomM: f.m.Dst.(*host.VM)}
			var err error
			if f.t, f.m, err = f.pair.Destination(ctx, dst); err != nil {
				t.Fatal(err)
			}
			f.hs = lab.Handshake(f.hs.Client, src, dst, "target")
		}
		r, err := syncpoint.Run(ctx, f.t, f.m, f.hs, syncpoint.Config{})
		logResult(t, r)
		checkInvariant(t, r)
		if err != nil {
			t.Fatalf("migration %d: %v", i+1, err)
		}
		if d, _ := r.Waits[1].Get(); d < 20*time.Millisecond {
			t.Errorf("migration %d: the target waited %v at P2; domain M (4x larger) cannot have finished that soon", i+1, r.Waits[1])
		}
		if found, err := f.sup.Find(needle); !found {
			t.Errorf("migration %d: supervisor does not find the planted string: %v", i+1, err)
		}
	}
}
