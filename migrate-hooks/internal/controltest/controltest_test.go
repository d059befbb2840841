package controltest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/internal/controltest"
)

// The stand-in keeps the real supervisor's fences: it reports its epoch, and refuses a
// resume below an accepted epoch as stale, doing nothing.
func TestStandInRefusesStale(t *testing.T) {
	dir := t.TempDir()
	ram := filepath.Join(dir, "ram")
	os.WriteFile(ram, make([]byte, 1<<20), 0o600)
	s, err := controltest.Listen(filepath.Join(dir, "c.sock"), ram)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old, err := control.Dial(ctx, filepath.Join(dir, "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	fresh, err := control.Dial(ctx, filepath.Join(dir, "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if old.Epoch() != 1 || fresh.Epoch() != 2 {
		t.Errorf("epochs %d, %d; want 1 and 2", old.Epoch(), fresh.Epoch())
	}
	if _, err := fresh.Resume(ctx, control.ResumeArgs{Source: "file:" + ram}); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	// The older connection's resume comes too late.
	if _, err := old.Resume(ctx, control.ResumeArgs{Source: "file:" + ram}); !errors.Is(err, control.ErrStale) {
		t.Errorf("resume with an old epoch: %v, want ErrStale", err)
	}
	if st, _ := s.State(); st != "quiesced" {
		t.Errorf("state %s after a stale resume, want quiesced", st)
	}
}
