package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeHandler records calls; the supervisor's real handler is tested end to end in
// appliance/internal/cli.
type fakeHandler struct {
	resumed ResumeArgs
	err     error
}

func (f *fakeHandler) Status(context.Context) Response {
	return Response{State: StateMonitoring, Passes: 3, Target: &TargetInfo{Name: "t", Host: "h1"}}
}
func (f *fakeHandler) Prepare(context.Context) (Response, error) {
	c := Addr(0x1000)
	return Response{State: StateQuiesced, Cursor: &c}, nil
}
func (f *fakeHandler) Resume(_ context.Context, a ResumeArgs) (Response, error) {
	f.resumed = a
	if f.err != nil {
		return Response{State: StateQuiesced}, f.err
	}
	return Response{State: StateMonitoring}, nil
}

func listen(t *testing.T, h Handler) *Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	s, err := Listen(path, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawExchange writes lines and reads one response line per request line.
func rawExchange(t *testing.T, path string, lines ...string) []string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	var out []string
	for _, l := range lines {
		if _, err := io.WriteString(c, l+"\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", l, err)
		}
		out = append(out, strings.TrimSpace(resp))
	}
	return out
}

func TestProtocol(t *testing.T) {
	h := &fakeHandler{}
	s := listen(t, h)
	got := rawExchange(t, s.Path(),
		`{"id":1,"cmd":"status"}`,
		`{"id":"abc","cmd":"prepare"}`,
		`{"id":3,"cmd":"resume","args":{"source":"file:/dev/shm/x","layout":"flat","target":{"name":"t","uuid":"u","host":"h2"}}}`,
		`{"id":4,"cmd":"resume"}`,
		`{"id":5,"cmd":"resume","args":{"layout":"flat"}}`,
		`{"id":6,"cmd":"reboot"}`,
		`not json`,
		`{"id":7}`,
		`{"id":8,"cmd":"prepare","addr_form":"0x"}`,
		`{"id":9,"cmd":"status","host_form":"hypervisor_host"}`,
	)
	want := []string{
		// A request without host_form (an older client's) gets the target's host as
		// "host", the name it reads.
		`{"id":1,"ok":true,"state":"monitoring","passes":3,"target":{"name":"t","host":"h1"}}`,
		`{"id":"abc","ok":true,"state":"quiesced","cursor":4096}`,
		`{"id":3,"ok":true,"state":"monitoring"}`,
		`{"id":4,"ok":false,"error":"resume needs args with a source","code":"bad_request"}`,
		`{"id":5,"ok":false,"error":"resume args: source is missing","code":"bad_request"}`,
		`{"id":6,"ok":false,"error":"unknown cmd \"reboot\" (want status, prepare or resume)","code":"unknown_command"}`,
		`{"id":null,"ok":false,"error":"request is not a JSON object: invalid character 'o' in literal null (expecting 'u')","code":"bad_request"}`,
		`{"id":7,"ok":false,"error":"cmd is missing","code":"bad_request"}`,
		// A current client asks for the alert schema's "0x..." form; the request
		// above without addr_form (an older client's) got the integer it decodes.
		`{"id":8,"ok":true,"state":"quiesced","cursor":"0x1000"}`,
		// A current client asks for the alert schema's "hypervisor_host".
		`{"id":9,"ok":true,"state":"monitoring","target":{"name":"t","hypervisor_host":"h1"},"passes":3}`,
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("response %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
	if h.resumed.Source != "file:/dev/shm/x" || h.resumed.Target.Host != "h2" || h.resumed.Layout != "flat" {
		t.Errorf("resume args = %+v", h.resumed)
	}
	// A current client's resume names the host under both names; either alone is read.
	for _, target := range []string{`{"hypervisor_host":"h3","host":"h3"}`, `{"hypervisor_host":"h3"}`, `{"host":"h3"}`} {
		h.resumed = ResumeArgs{}
		rawExchange(t, s.Path(), `{"id":10,"cmd":"resume","args":{"source":"file:/y","target":`+target+`}}`)
		if h.resumed.Target.Host != "h3" {
			t.Errorf("resume with target %s: host %q, want h3", target, h.resumed.Target.Host)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	h := &fakeHandler{err: Errorf(CodeGuestChanged, "page 0x1000 differs")}
	s := listen(t, h)
	c, err := Dial(context.Background(), s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Do(context.Background(), CmdResume, ResumeArgs{Source: "file:/x"})
	if err != nil {
		t.Fatal(err)
	}
	if r.OK || r.Code != CodeGuestChanged || r.State != StateQuiesced || r.Error != "page 0x1000 differs" {
		t.Errorf("response = %+v", r)
	}
	h.err = errors.New("boom")
	r, err = c.Do(context.Background(), CmdResume, ResumeArgs{Source: "file:/x"})
	if err != nil || r.Code != CodeInternal {
		t.Errorf("response = %+v, %v", r, err)
	}
}

func TestSocketModeAndStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.sock")
	// A stale socket left by a killed process is replaced.
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	s, err := Listen(path, &fakeHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	// A live socket is not taken over.
	if _, err := Listen(path, &fakeHandler{}, slog.Default()); err == nil || !strings.Contains(err.Error(), "another supervisor") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	s.Close()
	// A regular file is never removed.
	os.WriteFile(path, []byte("x"), 0o644)
	if _, err := Listen(path, &fakeHandler{}, slog.Default()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("err = %v", err)
	}
}

// helperEnv makes the test binary act as a control client (see TestMain).
const helperEnv = "DOMAINM_CONTROL_TEST_CLIENT"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(3)
		}
		io.WriteString(c, `{"id":1,"cmd":"status"}`+"\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Print(line)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestOtherUserRefused connects as an unprivileged user (nobody): the 0600 mode stops
// it, and, with the mode opened up, the peer-credential check still does.
func TestOtherUserRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test switches to another uid and must run as root (make test does)")
	}
	const nobody = 65534
	s := listen(t, &fakeHandler{})
	openUp(filepath.Dir(s.Path()))
	// Copy the test binary where nobody can run it.
	self, _ := os.Executable()
	bindir := t.TempDir()
	openUp(bindir)
	bin := filepath.Join(bindir, "client")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func() string {
		cmd := exec.Command(bin)
		cmd.Env = []string{helperEnv + "=" + s.Path()}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 3) {
			t.Fatalf("client as nobody: %v: %s", err, out)
		}
		return string(out)
	}
	if out := run(); !strings.Contains(out, "permission denied") {
		t.Errorf("with mode 0600: %q, want permission denied", out)
	}
	os.Chmod(s.Path(), 0o666)
	out := run()
	if !strings.Contains(out, `"code":"forbidden"`) || strings.Contains(out, `"ok":true`) {
		t.Errorf("with mode 0666: %q, want forbidden", out)
	}
	// Root still gets in.
	if got := rawExchange(t, s.Path(), `{"id":1,"cmd":"status"}`); !strings.Contains(got[0], `"ok":true`) {
		t.Errorf("root: %s", got[0])
	}
}

func TestLongLineRejected(t *testing.T) {
	s := listen(t, &fakeHandler{})
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go c.Write([]byte(`{"id":1,"cmd":"` + strings.Repeat("x", MaxLine+10) + "\n"))
	var r Response
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.Code != CodeBadRequest {
		t.Errorf("response = %+v", r)
	}
}

// openUp makes dir and its parents below the system temp folder traversable by others.
func openUp(dir string) {
	for d := dir; len(d) > len(os.TempDir()); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
}

// TestClientAsksForHexCursor: this package's client (domainm status and the tests')
// asks for the "0x..." form and "hypervisor_host" and decodes them.
func TestClientAsksForHexCursor(t *testing.T) {
	s := listen(t, &fakeHandler{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Do(ctx, CmdPrepare, nil)
	if err != nil || !r.OK || r.Cursor == nil || *r.Cursor != 0x1000 || r.IntegerAddrs {
		t.Fatalf("prepare: %+v %v", r, err)
	}
	if b, _ := json.Marshal(r); !strings.Contains(string(b), `"cursor":"0x1000"`) {
		t.Errorf("re-encoded (as domainm status --json prints it): %s", b)
	}
	// And for the target's host as "hypervisor_host".
	r, err = c.Do(ctx, CmdStatus, nil)
	if err != nil || r.Target == nil || r.Target.Host != "h1" || r.LegacyHost {
		t.Fatalf("status: %+v %v", r, err)
	}
	if b, _ := json.Marshal(r); !strings.Contains(string(b), `"target":{"name":"t","hypervisor_host":"h1"}`) {
		t.Errorf("status re-encoded (as domainm status --json prints it): %s", b)
	}
}
