package alert

import (
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/domainm/domainm/image/rsyslogtest"
	"github.com/domainm/domainm/image/testenv"
)

// freePort is a TCP port on 127.0.0.1 that was free a moment ago.
var freePort = testenv.FreePort

// readLines reads an output file's lines (none when it does not exist yet).
var readLines = rsyslogtest.ReadLines

func writePEM(t testing.TB, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rsyslog is a real rsyslogd (image/rsyslogtest) with a plain TCP input, a TLS input
// (client certificates required) and a UDP input, each writing the raw message of every
// frame it receives, one per line, to its own file.
type rsyslog struct {
	*rsyslogtest.Server
	PlainPort, TLSPort, UDPPort int
	PlainOut, TLSOut, UDPOut    string
}

func startRsyslog(t testing.TB) *rsyslog {
	t.Helper()
	s := rsyslogtest.Start(t, rsyslogtest.Options{Inputs: []rsyslogtest.Input{
		{Name: "plain", Transport: rsyslogtest.TCP},
		{Name: "tls", Transport: rsyslogtest.TLS, ClientAuth: true},
		{Name: "udp", Transport: rsyslogtest.UDP},
	}})
	return &rsyslog{Server: s, PlainPort: s.Port("plain"), TLSPort: s.Port("tls"), UDPPort: s.Port("udp"),
		PlainOut: s.Out("plain"), TLSOut: s.Out("tls"), UDPOut: s.Out("udp")}
}

// waitLines polls until path has at least n lines or the timeout passes.
func waitLines(t testing.TB, path string, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l := readLines(t, path)
		if len(l) >= n || time.Now().After(deadline) {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
}
