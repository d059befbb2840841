package testenv

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestFakeClock: After fires only once Advance has passed its time, and Waiters counts
// what has not fired.
func TestFakeClock(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFakeClock(start)
	ch := c.After(time.Hour)
	if c.Waiters() != 1 {
		t.Fatalf("Waiters = %d, want 1", c.Waiters())
	}
	c.Advance(59 * time.Minute)
	select {
	case <-ch:
		t.Fatal("After(1h) fired after 59m")
	default:
	}
	c.Advance(time.Minute)
	select {
	case at := <-ch:
		if !at.Equal(start.Add(time.Hour)) {
			t.Errorf("fired with %v, want %v", at, start.Add(time.Hour))
		}
	default:
		t.Fatal("After(1h) did not fire after 1h")
	}
	if c.Waiters() != 0 || !c.Now().Equal(start.Add(time.Hour)) {
		t.Errorf("Waiters %d, Now %v after firing", c.Waiters(), c.Now())
	}
}

// TestDatagrams: what is sent to the socket is collected in order.
func TestDatagrams(t *testing.T) {
	d := ListenDatagrams(t, "udp", "127.0.0.1:0")
	c, err := net.Dial("udp", d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"one", "two"} {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	WaitFor(t, 10*time.Second, "two datagrams", func() bool { return len(d.All()) == 2 })
	if got := d.All(); got[0] != "one" || got[1] != "two" {
		t.Errorf("got %q", got)
	}
}

// TestOpenPTY: bytes written to the master arrive at the slave unchanged (raw mode).
func TestOpenPTY(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ptys are opened the Linux way only")
	}
	m, path := OpenPTY(t)
	s, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := m.Write([]byte("a\tb\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "a\tb\n" {
		t.Errorf("slave read %q, %v; want %q", buf, err, "a\tb\n")
	}
}

// TestWriteAt: the bytes land at the offset, the rest of the file stays.
func TestWriteAt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	WriteAt(t, p, 3, []byte("ab"))
	if b, _ := os.ReadFile(p); string(b) != "012ab56789" {
		t.Errorf("file %q", b)
	}
}
