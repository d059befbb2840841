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

// The stand-in decides a resume as the real supervisor does: on the RAM file of prepare
// (a rollback after a failed final copy, the target having run a few ms) it is the same
// guest whatever it wrote; another file whose sampled pages differ is refused as
// guest_changed, and one that shows them is taken.
func TestStandInResume(t *testing.T) {
	dir := t.TempDir()
	ram, other := filepath.Join(dir, "ram"), filepath.Join(dir, "other")
	os.WriteFile(ram, make([]byte, 1<<20), 0o600)
	s, err := controltest.Listen(filepath.Join(dir, "c.sock"), ram)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := control.Dial(ctx, filepath.Join(dir, "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	// The guest writes its first page (a sampled one) and is copied elsewhere.
	os.WriteFile(ram, append([]byte("written after prepare"), make([]byte, 1<<20-21)...), 0o600)
	os.WriteFile(other, make([]byte, 1<<20), 0o600)
	os.WriteFile(filepath.Join(dir, "changed"), append([]byte("x"), make([]byte, 1<<20-1)...), 0o600)
	if _, err := c.Resume(ctx, control.ResumeArgs{Source: "file:" + filepath.Join(dir, "changed")}); !errors.Is(err, control.ErrGuestChanged) {
		t.Errorf("resume on another file with a changed sampled page: %v, want guest_changed", err)
	}
	if _, err := c.Resume(ctx, control.ResumeArgs{Source: "file:" + ram}); err != nil {
		t.Errorf("resume on the file of prepare after the guest wrote to it: %v, want it taken", err)
	}
	if _, err := c.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(other, append([]byte("written after prepare"), make([]byte, 1<<20-21)...), 0o600)
	if _, err := c.Resume(ctx, control.ResumeArgs{Source: "file:" + other}); err != nil {
		t.Errorf("resume on a copy showing the sampled pages: %v, want it taken", err)
	}
}
