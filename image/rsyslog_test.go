package image

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// rsyslogName is the name in the test rsyslogd's certificate; the VM connects to
// 10.0.2.2 (QEMU user networking's host) and verifies this name (sink server_name).
const rsyslogName = "rsyslog.domainm.test"

// rsyslog is a real rsyslogd on the host's loopback with one RFC 5425 TLS input
// (server certificate from a CA the test makes; no client certificate asked for), which
// writes the raw message of every frame it receives, one per line, to Out.
type rsyslog struct {
	t              testing.TB
	dir, conf, pid string
	Port           int
	Out, CA        string
	cmd            *exec.Cmd
	exited         chan struct{}
}

func startRsyslog(t testing.TB) *rsyslog {
	t.Helper()
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		t.Fatalf("rsyslogd is needed (apt-get install rsyslog rsyslog-gnutls, or make deps): %v", err)
	}
	dir := t.TempDir()
	r := &rsyslog{t: t, dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), pid: filepath.Join(dir, "rsyslog.pid"),
		Port: freePort(t), Out: filepath.Join(dir, "tls.log")}
	var cert, key string
	r.CA, cert, key = makePKI(t, dir)
	if err := os.Mkdir(filepath.Join(dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="256k"
  defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q)
main_queue(queue.type="Direct")
module(load="imtcp" maxSessions="20")
template(name="raw" type="string" string="%%rawmsg%%\n")
ruleset(name="tls") { action(type="omfile" file=%q template="raw") }
input(type="imtcp" address="127.0.0.1" port="%d" ruleset="tls"
  streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
`, filepath.Join(dir, "work"), r.CA, cert, key, r.Out, r.Port)
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("rsyslogd", "-N1", "-f", r.conf).CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1 rejects the test config: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "rsyslogd.out"))
			t.Logf("rsyslogd said:\n%s", b)
		}
	})
	r.Start()
	return r
}

// Start runs rsyslogd in the foreground (own process group, killed with the test
// binary) and waits until its port accepts.
func (r *rsyslog) Start() {
	r.t.Helper()
	os.Remove(r.pid)
	cmd := exec.Command("rsyslogd", "-n", "-f", r.conf, "-i", r.pid)
	out, err := os.OpenFile(filepath.Join(r.dir, "rsyslogd.out"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting rsyslogd: %v", err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(r.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(r.Port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-r.exited:
			b, _ := os.ReadFile(filepath.Join(r.dir, "rsyslogd.out"))
			r.t.Fatalf("rsyslogd exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("rsyslogd did not listen on port %d within 60s", r.Port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends rsyslogd with SIGTERM (it writes out what it took), SIGKILL after 20 s.
func (r *rsyslog) Stop() {
	if r.cmd == nil {
		return
	}
	pid := r.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-r.exited
	}
	r.cmd = nil
}

// Lines returns the messages received so far.
func (r *rsyslog) Lines() []string {
	f, err := os.Open(r.Out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// makePKI writes a CA and a server certificate for rsyslogName (and 127.0.0.1) signed
// by it; it returns the paths of the CA, the certificate and its key.
func makePKI(t testing.TB, dir string) (ca, cert, key string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	writePEM := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "domainm image test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	k := newKey()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: rsyslogName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{rsyslogName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	writePEM(ca, "CERTIFICATE", caDER)
	writePEM(cert, "CERTIFICATE", der)
	writePEM(key, "PRIVATE KEY", kder)
	return ca, cert, key
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
