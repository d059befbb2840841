package alert

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

	"github.com/domainm/domainm/image/testenv"
)

// testPKI is a CA, a server certificate for 127.0.0.1/localhost and a client
// certificate, written as PEM files.
type testPKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

func makePKI(t testing.TB, dir string) testPKI {
	t.Helper()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "domainm test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := testPKI{CA: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.CA, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		c, k := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, c, "CERTIFICATE", der)
		writePEM(t, k, "PRIVATE KEY", kder)
		return c, k
	}
	p.ServerCert, p.ServerKey = leaf("localhost", 2, x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = leaf("domainm-client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freePort is a TCP port on 127.0.0.1 that was free a moment ago.
var freePort = testenv.FreePort

func freeUDPPort(t testing.TB) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// rsyslog is a real rsyslogd with a plain TCP input, a TLS input (client
// certificates required) and a UDP input, each writing the raw message of every frame it receives,
// one per line, to its own file.
type rsyslog struct {
	t                  testing.TB
	dir, conf, pid     string
	PlainPort, TLSPort int
	UDPPort            int
	PlainOut, TLSOut   string
	UDPOut             string
	PKI                testPKI
	cmd                *exec.Cmd
	exited             chan struct{}
}

func startRsyslog(t testing.TB) *rsyslog {
	t.Helper()
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		t.Fatalf("rsyslogd is needed (apt-get install rsyslog rsyslog-gnutls, or make deps): %v", err)
	}
	dir := t.TempDir()
	r := &rsyslog{t: t, dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), pid: filepath.Join(dir, "rsyslog.pid"),
		PlainPort: freePort(t), TLSPort: freePort(t),
		PlainOut: filepath.Join(dir, "plain.log"), TLSOut: filepath.Join(dir, "tls.log"), PKI: makePKI(t, dir),
		UDPPort: freeUDPPort(t), UDPOut: filepath.Join(dir, "udp.log")}
	if err := os.Mkdir(filepath.Join(dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`global(workDirectory=%[1]q maxMessageSize="256k"
  defaultNetstreamDriverCAFile=%[2]q defaultNetstreamDriverCertFile=%[3]q defaultNetstreamDriverKeyFile=%[4]q)
main_queue(queue.type="Direct")
module(load="imtcp" maxSessions="20")
template(name="raw" type="string" string="%%rawmsg%%\n")
ruleset(name="plain") { action(type="omfile" file=%[5]q template="raw") }
ruleset(name="tls") { action(type="omfile" file=%[6]q template="raw") }
module(load="imudp")
ruleset(name="udp") { action(type="omfile" file=%[9]q template="raw") }
input(type="imudp" address="127.0.0.1" port="%[10]d" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="%[7]d" ruleset="plain")
input(type="imtcp" address="127.0.0.1" port="%[8]d" ruleset="tls"
  streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
`, filepath.Join(dir, "work"), r.PKI.CA, r.PKI.ServerCert, r.PKI.ServerKey, r.PlainOut, r.TLSOut, r.PlainPort, r.TLSPort, r.UDPOut, r.UDPPort)
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

// Start runs rsyslogd in the foreground and waits until both ports accept.
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
	// Pdeathsig: a test binary killed by -timeout takes its daemons with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting rsyslogd: %v", err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(r.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for _, port := range []int{r.PlainPort, r.TLSPort} {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-r.exited:
				b, _ := os.ReadFile(filepath.Join(r.dir, "rsyslogd.out"))
				r.t.Fatalf("rsyslogd exited at start:\n%s", b)
			default:
			}
			if time.Now().After(deadline) {
				r.t.Fatalf("rsyslogd did not listen on port %d within 30s", port)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Stop ends rsyslogd with SIGTERM (it writes out what it took), SIGKILL after 20s.
func (r *rsyslog) Stop() {
	if r.cmd == nil {
		return
	}
	pid := r.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGCONT) // if paused
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		<-r.exited
	}
	r.cmd = nil
}

// Pause freezes rsyslogd (SIGSTOP): connections stay up, nothing is read.
func (r *rsyslog) Pause() { syscall.Kill(r.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume undoes Pause.
func (r *rsyslog) Resume() { syscall.Kill(r.cmd.Process.Pid, syscall.SIGCONT) }

// lines reads an output file's lines ("" when it does not exist yet).
func readLines(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
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
