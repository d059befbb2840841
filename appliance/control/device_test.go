//go:build linux

package control

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// openPTY returns a pseudo-terminal's master and the path of its slave, in raw mode
// (no echo, no line editing) like a virtio-serial port. The slave stays open in the
// test so that its mode survives the server opening and closing it.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n uint32
	var ierr error
	rc.Control(func(fd uintptr) {
		if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr == nil {
			n, ierr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
		}
	})
	if ierr != nil {
		t.Fatal(ierr)
	}
	path := fmt.Sprintf("/dev/pts/%d", n)
	slave, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		t.Fatal(err)
	}
	return m, path
}

// TestServeDevice speaks the protocol over a character device (a pty standing in for
// the guest end of a virtio-serial port).
func TestServeDevice(t *testing.T) {
	master, path := openPTY(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		ServeDevice(ctx, path, &fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(done)
	}()
	master.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(master)
	for i, req := range []string{`{"id":1,"cmd":"status"}`, `{"id":2,"cmd":"prepare"}`} {
		if _, err := io.WriteString(master, req+"\n"); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if want := fmt.Sprintf(`{"id":%d,"ok":true`, i+1); !strings.HasPrefix(line, want) {
			t.Errorf("response %q, want it to start with %s", line, want)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeDevice did not return after cancel")
	}
}
