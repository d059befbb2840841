package virt_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/migrate-hooks/control"
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
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{lab: virttest.StartLab(t)}
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
	sock := filepath.Join(t.TempDir(), "control.sock")
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

// TestCoMigrateLibvirt boots one pair under the source libvirtd and co-migrates it
// through the driver; the failure cases leave it rolled back at the source, so they run
// first on the same pair, and the successful migration last.
func TestCoMigrateLibvirt(t *testing.T) {
	f := newFixture(t)
	atSource := map[string]string{"src/target": "running", "src/domm": "running", "dst/target": "absent", "dst/domm": "absent"}

	t.Run("migrates", func(t *testing.T) {
		ts, ms, _, mm := f.pair(t, "", "")
		_, err := f.run(t, ts, ms, syncpoint.Config{Mode: syncpoint.Sync, P1: 90 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		// Domain M's stream covers its own RAM, not its view of the target.
		if got := mm.StreamBytes(); got == 0 || got > (virttest.DomMMiB+16)<<20 {
			t.Errorf("domain M's stream covered %d MiB, want its own %d MiB", got>>20, virttest.DomMMiB)
		}
		_ = atSource
		f.states(t, map[string]string{"dst/target": "running", "dst/domm": "running", "src/target": "shutoff", "src/domm": "shutoff"})
		dstRAM := f.lab.TargetRAM(t, f.lab.Dst)
		f.supervisorAt(t, dstRAM)
		if found, err := f.sup.Find(needle); !found {
			t.Errorf("the string planted before migration is not in the destination's RAM: %v", err)
		}
		after := []byte("DOMAINM-PLANTED-AFTER-LIBVIRT-9d4c")
		plant(t, dstRAM, 40<<20, after)
		if found, err := f.sup.Find(after); !found {
			t.Errorf("the string planted after migration is not found from the destination: %v", err)
		}
	})
}
