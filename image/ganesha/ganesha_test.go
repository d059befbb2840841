package ganesha

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServer starts a real ganesha.nfsd on a folder, checks it answers NFSv4 (and
// refuses NFSv3: no rpcbind, no MOUNT protocol), that its pid, log and config are in
// its own folder, that Stop takes the export away and that Start serves it again on
// the same port.
func TestServer(t *testing.T) {
	export := t.TempDir()
	if err := os.WriteFile(filepath.Join(export, "disk.img"), []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{Export: export})
	if err != nil {
		t.Fatal(err) // a missing ganesha.nfsd fails here, loudly
	}
	t.Cleanup(func() { s.Close() })
	checkServes(ctx, t, s)
	pid := s.Pid()
	b, err := os.ReadFile(s.PIDFile())
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		t.Errorf("pid file %s holds %q (err %v), want %d", s.PIDFile(), b, err, pid)
	}
	err = Ping(ctx, s.Addr, 3)
	var mm *MismatchError
	if !errors.As(err, &mm) || mm.Low != 4 || mm.High != 4 {
		t.Errorf("NFSv3 NULL call: %v, want a version mismatch serving 4 only", err)
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("ganesha pid %d still there after Stop: %v", pid, err)
	}
	if err := Ping(ctx, s.Addr, 4); err == nil {
		t.Errorf("NFS server on %s still answers after Stop", s.Addr)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	checkServes(ctx, t, s)
	if s.Pid() == pid {
		t.Errorf("restarted server has the old pid %d", pid)
	}
}

func checkServes(ctx context.Context, t *testing.T, s *Server) {
	t.Helper()
	if err := Ping(ctx, s.Addr, 4); err != nil {
		t.Fatalf("NFSv4 NULL call: %v\nlog:\n%s", err, s.LogTail(20))
	}
	conf, err := os.ReadFile(filepath.Join(s.Dir, "ganesha.conf"))
	if err != nil || !strings.Contains(string(conf), "Path = \""+s.Export+"\"") {
		t.Errorf("config in %s does not export %s: %v", s.Dir, s.Export, err)
	}
}
