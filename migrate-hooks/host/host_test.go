package host

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/domainm/domainm/migrate-hooks/qmp"
)

func newHost(t *testing.T, name string) *Local {
	t.Helper()
	h := &Local{Name: name, Dir: t.TempDir(), Prefix: "domainm-test-" + t.Name() + "-"}
	t.Cleanup(h.Close)
	return h
}

// TestDeviceModelMigrates migrates a target and a Domain M that watches it through
// ivshmem, with x-ignore-shared on Domain M's stream: the target's RAM arrives in the
// destination's RAM file, and Domain M's stream does not carry the watched RAM.
func TestDeviceModelMigrates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	accel, err := FirmwareAccel(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accelerator for firmware-only guests: %s", accel)
	src, dst := newHost(t, "src"), newHost(t, "dst")
	target := Machine{Name: "target", MemMiB: 64, Accel: accel, RAM: "shared"}
	domm := Machine{Name: "domm", MemMiB: 32, Accel: accel, Watch: "target", WatchMiB: 64}

	st, err := src.Start(ctx, target, "")
	if err != nil {
		t.Fatal(err)
	}
	sm, err := src.Start(ctx, domm, "")
	if err != nil {
		t.Fatal(err)
	}
	needle := []byte("DOMAINM-HOST-TEST-NEEDLE")
	writeAt(t, st.RAMFile, 40<<20, needle)

	uT, _ := dst.IncomingURI()
	dt, err := dst.Start(ctx, target, uT)
	if err != nil {
		t.Fatal(err)
	}
	uM, _ := dst.IncomingURI()
	dm, err := dst.Start(ctx, domm, uM)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range []*VM{st, sm, dt, dm} {
		caps := map[string]bool{"events": true}
		if vm.Name == "domm" {
			caps["x-ignore-shared"] = true
		}
		if err := vm.Mon.SetCapabilities(ctx, caps); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Mon.Migrate(ctx, uT); err != nil {
		t.Fatal(err)
	}
	if err := sm.Mon.Migrate(ctx, uM); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []*VM{st, sm, dt, dm} {
		if _, _, err := vm.Mon.WaitEvent(ctx, 0, func(e qmp.Event) bool { return e.MigrationStatus() == "completed" }); err != nil {
			t.Fatalf("%s/%s: waiting for completion: %v", vm.Host, vm.Name, err)
		}
	}
	mi, err := sm.Mon.QueryMigrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Domain M's own RAM is 32 MiB; its stream must not also carry the 64 MiB target view.
	if mi.RAM == nil || mi.RAM.Total > 40<<20 {
		t.Errorf("domain M's stream covers %+v bytes of RAM, want only its own 32 MiB", mi.RAM)
	}
	got := readAt(t, dt.RAMFile, 40<<20, len(needle))
	if !bytes.Equal(got, needle) {
		t.Errorf("destination target RAM at 40 MiB = %q, want %q", got, needle)
	}
	for _, vm := range []*VM{dt, dm} {
		s, err := vm.Mon.QueryStatus(ctx)
		if err != nil || s.Running {
			t.Errorf("%s at destination: status %+v, %v; want paused until cont", vm.Name, s, err)
		}
	}
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
