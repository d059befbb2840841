package lab

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestFullLoop is issue 11's loop on this machine (see Run): ganesha, rsyslogd on TLS,
// a target booting with its disk in the export, Domain M watching it through an nvdimm
// and over NFS; the planted string and setuid binary alerted at rsyslogd with the
// target's name and uuid; a co-migration by domainm-migrate with the invariant checked
// and a monitoring gap of 0; a new string found from the destination; disk checks over
// the same export there. The timeline goes to the test log.
func TestFullLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("boots four VMs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	dir := t.TempDir()
	w := &testWriter{t: t}
	rep, err := Run(ctx, Options{Dir: dir, BinDir: dir, Out: w})
	if err != nil {
		for _, f := range []string{"hosts/src-domm.serial", "hosts/dst-domm.serial", "hosts/src-target.serial", "hosts/dst-target.serial"} {
			if b, rerr := os.ReadFile(dir + "/" + f); rerr == nil {
				t.Logf("%s (end):\n%s", f, tail(string(b), 30))
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
	t.Logf("full loop: %.1f s", rep.Total.Seconds())
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b[:len(b)-1]))
	return len(b), nil
}
