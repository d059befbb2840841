//go:build linux

package control

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/image/testenv"
)

// openPTY returns a pseudo-terminal's master and the path of its slave, in raw mode
// like a virtio-serial port.
var openPTY = testenv.OpenPTY

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
