//go:build linux

package supervisor

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/domainm/domainm/appliance/control"
)

// TestHandshakeOverDevice runs prepare and resume over control.device, a pty standing
// in for the guest end of a virtio-serial port.
func TestHandshakeOverDevice(t *testing.T) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rc, _ := m.SyscallConn()
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
	dev := fmt.Sprintf("/dev/pts/%d", n)
	slave, err := os.OpenFile(dev, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t, harnessOpts{device: dev})
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	m.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(m)
	do := func(req string) control.Response {
		t.Helper()
		if _, err := io.WriteString(m, req+"\n"); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var resp control.Response
		if err := json.Unmarshal([]byte(line), &resp); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		return resp
	}
	if r := do(`{"id":1,"cmd":"prepare"}`); !r.OK || r.State != "quiesced" {
		t.Fatalf("prepare = %+v", r)
	}
	if r := do(`{"id":2,"cmd":"resume","args":{"source":"file:` + h.ram + `"}}`); !r.OK || r.State != "monitoring" {
		t.Fatalf("resume = %+v", r)
	}
	if r := do(`{"id":3,"cmd":"status"}`); r.State != "monitoring" {
		t.Errorf("status = %+v", r)
	}
}
