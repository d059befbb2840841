package rsyslogtest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/domainm/domainm/image/testenv"
)

// TestInputs starts rsyslogd with each kind of input and sends one frame to each: the
// plain TCP and UDP frames and the TLS frame from a client with the test's client
// certificate arrive, each in its input's file exactly as sent; a TLS client without a
// certificate gets nothing through the input that requires one, but does through the
// anonymous one; Stop and Start keep what was received.
func TestInputs(t *testing.T) {
	s := Start(t, Options{ServerName: "receiver.test", Inputs: []Input{
		{Name: "plain", Transport: TCP}, {Name: "mtls", Transport: TLS, ClientAuth: true},
		{Name: "anon", Transport: TLS}, {Name: "udp", Transport: UDP},
	}})
	frame := func(name string) string { return fmt.Sprintf("<14>1 2026-11-30T14:00:00Z h app - - - via %s", name) }
	addr := func(name string) string { return fmt.Sprintf("127.0.0.1:%d", s.Port(name)) }

	c, err := net.Dial("tcp", addr("plain"))
	must(t, err)
	fmt.Fprintf(c, "%s\n", frame("plain"))
	c.Close()
	u, err := net.Dial("udp", addr("udp"))
	must(t, err)
	fmt.Fprint(u, frame("udp"))
	u.Close()

	ca, err := os.ReadFile(s.PKI.CA)
	must(t, err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(s.PKI.ClientCert, s.PKI.ClientKey)
	must(t, err)
	send := func(name string, certs []tls.Certificate, msg string) {
		c, err := tls.Dial("tcp", addr(name), &tls.Config{RootCAs: pool, ServerName: "receiver.test", Certificates: certs})
		if err != nil {
			return // refused at the handshake: nothing sent
		}
		fmt.Fprintf(c, "%s\n", msg)
		// Under TLS 1.3 a refused client certificate is known only after the client's
		// handshake ended: give the server a moment to answer before closing.
		c.SetReadDeadline(time.Now().Add(time.Second))
		c.Read(make([]byte, 1))
		c.Close()
	}
	send("mtls", []tls.Certificate{cert}, frame("mtls"))
	send("mtls", nil, frame("mtls without a certificate"))
	send("anon", nil, frame("anon"))

	for _, name := range []string{"plain", "mtls", "anon", "udp"} {
		testenv.WaitFor(t, 30*time.Second, "the frame via "+name, func() bool { return len(s.Lines(name)) > 0 })
	}
	s.Stop()
	s.Start()
	for _, name := range []string{"plain", "mtls", "anon", "udp"} {
		if got := s.Lines(name); !slices.Equal(got, []string{frame(name)}) {
			t.Errorf("%s received %q, want %q", name, got, frame(name))
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
