package lab

import (
	"net"

	"github.com/domainm/domainm/image/rsyslogtest"
)

// ServerName is the name in the lab receiver's certificate, which the guests' syslog
// sinks verify (server_name).
const ServerName = "rsyslog.lab"

// PKI is the lab's own CA and the receiver's certificate, as PEM files (made as the
// tests' rsyslogd makes them).
type PKI = rsyslogtest.PKI

// MakePKI writes a fresh CA and a server certificate for ServerName, 127.0.0.1 and
// 10.0.2.2 (the host as guests see it) into dir.
func MakePKI(dir string) (PKI, error) {
	return rsyslogtest.MakePKI(dir, ServerName, net.IPv4(10, 0, 2, 2))
}
