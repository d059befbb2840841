package diskscan

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestWalkSkipAndCancel(t *testing.T) {
	dir := images(t)
	fs, c, err := OpenVolume(filepath.Join(dir, "ext4.raw"), -1)
	must(t, err)
	defer c.Close()
	all, _ := walkAll(t, fs)

	// SkipDir on a directory prunes it.
	var seen []string
	must(t, fs.Walk(context.Background(), "/", func(p string, e *Entry, err error) error {
		seen = append(seen, p)
		if p == "/many" {
			return filepath.SkipDir
		}
		return nil
	}))
	for _, p := range seen {
		if strings.HasPrefix(p, "/many/") {
			t.Fatalf("SkipDir on /many: visited %s", p)
		}
	}
	if len(seen) != len(all)-2100 {
		t.Errorf("SkipDir on /many: %d entries, want %d", len(seen), len(all)-2100)
	}

	// SkipDir on a file skips the rest of its directory (as filepath.WalkDir does).
	seen = nil
	must(t, fs.Walk(context.Background(), "/bin", func(p string, e *Entry, err error) error {
		seen = append(seen, p)
		if p == "/bin/big" {
			return filepath.SkipDir
		}
		return nil
	}))
	if strings.Join(seen, " ") != "/bin /bin/big" {
		t.Errorf("SkipDir on /bin/big: visited %v", seen)
	}

	// SkipAll stops the walk without an error; other errors are returned.
	n := 0
	must(t, fs.Walk(context.Background(), "/", func(string, *Entry, error) error {
		if n++; n == 10 {
			return filepath.SkipAll
		}
		return nil
	}))
	if n != 10 {
		t.Errorf("SkipAll: %d callbacks after it", n-10)
	}
	stop := errors.New("stop")
	if err := fs.Walk(context.Background(), "/", func(string, *Entry, error) error { return stop }); err != stop {
		t.Errorf("callback error: Walk returned %v", err)
	}

	// A cancelled context ends the walk with its error.
	ctx, cancel := context.WithCancel(context.Background())
	n = 0
	err = fs.Walk(ctx, "/", func(string, *Entry, error) error {
		if n++; n == 5 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 5 {
		t.Errorf("cancelled walk: err %v after %d callbacks", err, n)
	}

	// A missing root is reported to fn.
	var gotErr error
	must(t, fs.Walk(context.Background(), "/nope", func(p string, e *Entry, err error) error {
		gotErr = err
		return nil
	}))
	if gotErr == nil {
		t.Error("missing root: no error passed to fn")
	}
}
