//go:build linux

package supervisor

import (
	"bufio"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/image/testenv"
)

// TestHandshakeOverDevice runs prepare and resume over control.device, a pty standing
// in for the guest end of a virtio-serial port.
func TestHandshakeOverDevice(t *testing.T) {
	m, dev := testenv.OpenPTY(t)

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
