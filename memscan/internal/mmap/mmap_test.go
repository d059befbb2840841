//go:build linux

package mmap

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestMapSeesWritesAndFaultsSafely(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram")
	page := os.Getpagesize()
	if err := os.WriteFile(path, make([]byte, 3*page), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Map(f, int64(3*page))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	// MAP_SHARED: a later write through another descriptor is visible.
	want := []byte("live guest write")
	if _, err := f.WriteAt(want, int64(2*page+10)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := Copy(got, m.Bytes()[2*page+10:]); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("mapped bytes = %q, want %q", got, want)
	}

	// Shrinking the file under the mapping turns reads past the end into SIGBUS;
	// Copy must report it instead of crashing.
	if err := f.Truncate(int64(page)); err != nil {
		t.Fatal(err)
	}
	_, err = Copy(got, m.Bytes()[2*page:])
	var fe *FaultError
	if !errors.As(err, &fe) {
		t.Fatalf("Copy after truncate: err = %v, want *FaultError", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if m.Bytes() != nil {
		t.Fatal("Bytes after Close is not nil")
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestMapRejectsEmpty(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "empty"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Map(f, 0); err == nil {
		t.Fatal("Map of an empty file succeeded")
	}
}
