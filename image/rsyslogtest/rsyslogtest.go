// Package rsyslogtest runs a real rsyslogd for tests, as net/http/httptest runs a real
// server: inputs on 127.0.0.1 (plain TCP, TLS with or without client certificates,
// UDP), each writing the raw message of every frame it receives, one per line, to a
// file of its own; the certificates its TLS inputs and the test's clients use (MakePKI);
// rsyslogd in a process group of its own, killed with the test binary and stopped when
// the test ends, its output logged when the test failed.
//
// The alert sinks' tests, domainm alert test's and the image's VM tests use it, so the
// receiver their alerts are checked against is configured one way.
package rsyslogtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/image/testenv"
)

// Transports of an Input.
const (
	TCP = "tcp" // plain TCP, octet-counted or newline framing (imtcp)
	TLS = "tls" // RFC 5425 over gnutls, server certificate from the test's CA
	UDP = "udp" // RFC 5426 datagrams
)

// Input is one listening input of the daemon.
type Input struct {
	Name      string // its ruleset and its output file (Dir/Name.log)
	Transport string // TCP, TLS or UDP
	// ClientAuth, for TLS: a client certificate signed by the CA is required
	// (x509/certvalid); without it the input takes anonymous clients.
	ClientAuth bool
	// Port is the port to listen on; 0 picks a free one.
	Port int
}

// Options are how Start configures the daemon.
type Options struct {
	ServerName string   // in the server certificate; "localhost" when empty
	IPs        []net.IP // in the server certificate besides 127.0.0.1
	Inputs     []Input
}

// Server is a running rsyslogd.
type Server struct {
	Dir string
	PKI PKI

	t      testing.TB
	conf   string
	inputs []Input
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start writes the config, checks it with rsyslogd -N1, starts the daemon and waits
// until its TCP and TLS inputs accept. A missing rsyslogd fails the test.
func Start(t testing.TB, opt Options) *Server {
	t.Helper()
	testenv.MustHave(t, "rsyslogd")
	s := &Server{Dir: t.TempDir(), t: t}
	s.conf = filepath.Join(s.Dir, "rsyslog.conf")
	name := opt.ServerName
	if name == "" {
		name = "localhost"
	}
	var err error
	if s.PKI, err = MakePKI(s.Dir, name, opt.IPs...); err != nil {
		t.Fatalf("test PKI: %v", err)
	}
	if err := os.Mkdir(filepath.Join(s.Dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, in := range opt.Inputs {
		if in.Port == 0 {
			if in.Transport == UDP {
				in.Port = freeUDPPort(t)
			} else {
				in.Port = testenv.FreePort(t)
			}
		}
		s.inputs = append(s.inputs, in)
	}
	if err := os.WriteFile(s.conf, []byte(s.config()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("rsyslogd", "-N1", "-f", s.conf).CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1 rejects the test config: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(s.Dir, "rsyslogd.out"))
			t.Logf("rsyslogd said:\n%s", b)
		}
	})
	s.Start()
	return s
}

// config is the daemon's configuration in RainerScript: the raw message of each frame
// (%rawmsg%, the frame exactly as sent) one per line.
func (s *Server) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, `global(workDirectory=%q maxMessageSize="256k"
  defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q)
main_queue(queue.type="Direct")
template(name="raw" type="string" string="%%rawmsg%%\n")
`, filepath.Join(s.Dir, "work"), s.PKI.CA, s.PKI.ServerCert, s.PKI.ServerKey)
	var tcp, udp bool
	for _, in := range s.inputs {
		tcp, udp = tcp || in.Transport != UDP, udp || in.Transport == UDP
	}
	if tcp {
		b.WriteString(`module(load="imtcp" maxSessions="20")` + "\n")
	}
	if udp {
		b.WriteString(`module(load="imudp")` + "\n")
	}
	for _, in := range s.inputs {
		fmt.Fprintf(&b, "ruleset(name=%q) { action(type=\"omfile\" file=%q template=\"raw\") }\n", in.Name, s.Out(in.Name))
		switch in.Transport {
		case UDP:
			fmt.Fprintf(&b, "input(type=\"imudp\" address=\"127.0.0.1\" port=\"%d\" ruleset=%q)\n", in.Port, in.Name)
		case TCP:
			fmt.Fprintf(&b, "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"%d\" ruleset=%q)\n", in.Port, in.Name)
		case TLS:
			auth := "anon"
			if in.ClientAuth {
				auth = "x509/certvalid"
			}
			fmt.Fprintf(&b, "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"%d\" ruleset=%q\n  streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=%q)\n", in.Port, in.Name, auth)
		default:
			s.t.Fatalf("rsyslogtest: input %s: transport %q", in.Name, in.Transport)
		}
	}
	return b.String()
}

// Port is the port of the named input.
func (s *Server) Port(name string) int { return s.input(name).Port }

// Out is the file the named input writes.
func (s *Server) Out(name string) string { return filepath.Join(s.Dir, name+".log") }

func (s *Server) input(name string) Input {
	for _, in := range s.inputs {
		if in.Name == name {
			return in
		}
	}
	s.t.Fatalf("rsyslogtest: no input %q", name)
	return Input{}
}

// Start runs rsyslogd in the foreground (again, after Stop) and waits up to 60 s until
// its TCP and TLS inputs accept.
func (s *Server) Start() {
	s.t.Helper()
	pid := filepath.Join(s.Dir, "rsyslog.pid")
	os.Remove(pid)
	cmd := exec.Command("rsyslogd", "-n", "-f", s.conf, "-i", pid)
	out, err := os.OpenFile(filepath.Join(s.Dir, "rsyslogd.out"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group; Pdeathsig: a test binary killed by -timeout takes it along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting rsyslogd: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for _, in := range s.inputs {
		for in.Transport != UDP {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(in.Port), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-s.exited:
				b, _ := os.ReadFile(filepath.Join(s.Dir, "rsyslogd.out"))
				s.t.Fatalf("rsyslogd exited at start:\n%s", b)
			default:
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("rsyslogd did not listen on port %d within 60 s", in.Port)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Stop ends rsyslogd with SIGTERM (it writes out what it took; woken first if Paused),
// its process group with SIGKILL after 20 s.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	pid := s.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGCONT)
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

// Pid is the running rsyslogd's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Pause freezes rsyslogd (SIGSTOP): connections stay up, nothing is read.
func (s *Server) Pause() { syscall.Kill(s.cmd.Process.Pid, syscall.SIGSTOP) }

// Resume undoes Pause.
func (s *Server) Resume() { syscall.Kill(s.cmd.Process.Pid, syscall.SIGCONT) }

// Lines returns the messages the named input wrote so far, one per frame.
func (s *Server) Lines(name string) []string {
	s.t.Helper()
	return ReadLines(s.t, s.Out(name))
}

// ReadLines reads a file's lines (none when it does not exist yet).
func ReadLines(t testing.TB, path string) []string {
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

func freeUDPPort(t testing.TB) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
