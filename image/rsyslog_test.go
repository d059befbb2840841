package image

import (
	"testing"

	"github.com/domainm/domainm/image/rsyslogtest"
)

// rsyslogName is the name in the test rsyslogd's certificate; the VM connects to
// 10.0.2.2 (QEMU user networking's host) and verifies this name (sink server_name).
const rsyslogName = "rsyslog.domainm.test"

// rsyslog is a real rsyslogd (image/rsyslogtest) on the host's loopback with one
// RFC 5425 TLS input (server certificate from a CA the test makes; no client
// certificate asked for), which writes the raw message of every frame it receives, one
// per line, to Out.
type rsyslog struct {
	*rsyslogtest.Server
	Port    int
	Out, CA string
}

func startRsyslog(t testing.TB) *rsyslog {
	t.Helper()
	s := rsyslogtest.Start(t, rsyslogtest.Options{ServerName: rsyslogName,
		Inputs: []rsyslogtest.Input{{Name: "tls", Transport: rsyslogtest.TLS}}})
	return &rsyslog{Server: s, Port: s.Port("tls"), Out: s.Out("tls"), CA: s.PKI.CA}
}

// Lines returns the messages received so far.
func (r *rsyslog) Lines() []string { return r.Server.Lines("tls") }
