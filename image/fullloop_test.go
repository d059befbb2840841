package image_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/image/lab"
)

// TestFullLoop is issue 11's loop on this machine (lab.Run, what make lab runs):
// ganesha, rsyslogd on TLS, a target booting with its disk in the export, Domain M
// booted from the appliance image watching it through an nvdimm and over the image's
// NFS mount; the planted string and setuid binary alerted at rsyslogd with the target's
// name and uuid; a co-migration by domainm-migrate with the invariant checked and a
// monitoring gap of 0; a new string found from the destination; disk checks over the
// same export there; ganesha stopped and started. The timeline goes to the test log.
//
// It is in the image package's test binary, beside the other tests that wait for
// `make image`, so that on a machine without a built image one `go test ./...` slot,
// not two, waits for the build.
func TestFullLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the image and boots four VMs")
	}
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Fatal("the image build needs root (debootstrap, chroot); run make test as root")
	}
	// The image first, on its own clock: from nothing (debootstrap from the archive) it
	// takes half an hour on a loaded machine; the loop itself then gets 25 minutes.
	start := time.Now()
	bctx, bcancel := context.WithTimeout(context.Background(), 40*time.Minute)
	dir, err := lab.MakeImage(bctx)
	bcancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("make image: %s (%s)", time.Since(start).Round(time.Second), dir)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	work := t.TempDir()
	rep, err := lab.Run(ctx, lab.Options{Dir: work, BinDir: work, Out: testWriter{t}})
	if err != nil {
		for _, f := range []string{"hosts/src-domm.serial", "hosts/dst-domm.serial", "hosts/src-target.serial", "hosts/dst-target.serial"} {
			if b, rerr := os.ReadFile(work + "/" + f); rerr == nil {
				t.Logf("%s (end):\n%s", f, lastN(string(b), 30))
			}
		}
		t.Fatal(err)
	}
	if rep.Implants[0] == rep.Implants[1] {
		t.Errorf("the same string planted twice: %s", rep.Implants[0])
	}
	if g := rep.Migration.Gap; g == nil || *g != 0 {
		t.Errorf("monitoring gap %s, want 0", rep.Migration.GapText())
	}
	t.Logf("full loop: %.1f s (Domain M boot to READY %.0f s)", rep.Total.Seconds(), rep.BootToReady.Seconds())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

func lastN(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
