package alert

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/image/testenv"
)

func rsyslogSinks(r *rsyslog) Config {
	base := SinkConfig{Type: TypeSyslog, BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second,
		Confirm: 300 * time.Millisecond, Timeout: 20 * time.Second}
	tcp, tls := base, base
	tcp.Name, tcp.Transport, tcp.Address = "tcp", "tcp", fmt.Sprintf("127.0.0.1:%d", r.PlainPort)
	tls.Name, tls.Transport, tls.Address = "tls", "tls", fmt.Sprintf("127.0.0.1:%d", r.TLSPort)
	tls.CAFile, tls.ServerName, tls.CertFile, tls.KeyFile = r.PKI.CA, "localhost", r.PKI.ClientCert, r.PKI.ClientKey
	c := Config{Hostname: "domainm-test", Sinks: []SinkConfig{tcp, tls}}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

// expectedFrame renders alert i as the syslog sink of a process with pid renders it.
func expectedFrame(cfg SinkConfig, pid, i int) (string, string) {
	e := testEvent(i)
	fillEvent(&e, "domainm-test")
	raw, err := marshalEvent(&e)
	if err != nil {
		panic(err)
	}
	back, err := decodeEvent(raw)
	if err != nil {
		panic(err)
	}
	f := newSyslogFormat(cfg)
	f.procid = strconv.Itoa(pid)
	return e.Event.ID, string(f.frame(back, raw))
}

var sdIDParam = regexp.MustCompile(`^<\d+>1 \S+ \S+ domainm (\d+) \S+ \[domainm@32473 id="([0-9a-f]{32})"`)

// checkReceived checks the lines rsyslog wrote: each is exactly the frame one of
// pids rendered for some alert; first occurrences come in order 0, 1, 2, ...
// through at least last; an alert repeats at most maxCopies times. It returns the
// number of duplicates.
func checkReceived(t *testing.T, name string, cfg SinkConfig, lines []string, pids []int, last, maxCopies int) int {
	t.Helper()
	byID := map[string]int{}
	for i := 0; i <= last+200; i++ {
		id, _ := expectedFrame(cfg, 0, i)
		byID[id] = i
	}
	copies := map[int]int{}
	highest, dups := -1, 0
	for n, l := range lines {
		m := sdIDParam.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%s: line %d is not a frame of ours:\n%q", name, n+1, l)
		}
		i, ok := byID[m[2]]
		if !ok {
			t.Fatalf("%s: line %d: unknown event id %s", name, n+1, m[2])
		}
		pid, _ := strconv.Atoi(m[1])
		known := false
		for _, p := range pids {
			known = known || p == pid
		}
		if _, want := expectedFrame(cfg, pid, i); !known || l != want {
			t.Fatalf("%s: line %d differs from the frame of alert %d (pids %v)\n got: %q\nwant: %q", name, n+1, i, pids, l, want)
		}
		copies[i]++
		switch {
		case i == highest+1:
			highest = i
		case i <= highest:
			if dups == 0 || copies[i-1] < copies[i]-1 || os.Getenv("DEBUG_DUPS") != "" && dups < 20 {
				t.Logf("%s: line %d: alert %d again (copy %d, highest so far %d)", name, n+1, i, copies[i], highest)
			}
			dups++
			if copies[i] > maxCopies {
				t.Fatalf("%s: alert %d received %d times", name, i, copies[i])
			}
		default:
			t.Fatalf("%s: line %d: alert %d arrived before alert %d (lost or out of order)", name, n+1, i, highest+1)
		}
	}
	if highest < last {
		t.Fatalf("%s: received alerts 0..%d, want at least 0..%d: %d missing", name, highest, last, last-highest)
	}
	return dups
}

// waitFor polls cond until it holds or fails the test after timeout.
var waitFor = testenv.WaitFor

// child is a running helper process.
type child struct {
	cmd      *exec.Cmd
	mu       sync.Mutex
	accepted int
	done     chan error
}

func startChild(t *testing.T, a helperArgs) *child {
	t.Helper()
	cmd := helperCmd(t, a)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, accepted: a.From - 1, done: make(chan error, 1)}
	t.Cleanup(func() { syscall.Kill(cmd.Process.Pid, syscall.SIGKILL) })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "accepted "); ok {
				n, _ := strconv.Atoi(v)
				c.mu.Lock()
				c.accepted = n
				c.mu.Unlock()
			}
		}
		c.done <- cmd.Wait()
	}()
	return c
}

func (c *child) lastAccepted() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accepted
}

func (c *child) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-c.done:
		if err != nil {
			t.Fatalf("helper pid %d: %v", c.cmd.Process.Pid, err)
		}
	case <-time.After(timeout):
		t.Fatalf("helper pid %d did not finish within %v", c.cmd.Process.Pid, timeout)
	}
}

// TestRsyslogOutageAndKill9 delivers alerts to a real rsyslogd over TCP and TLS
// (RFC 6587 octet counting, RFC 5425) and checks the exact frames received; then
// stops rsyslogd while the supervisor keeps emitting, restarts it, kills the
// supervisor with SIGKILL mid-delivery, and starts a new one on the same spool:
// every accepted alert arrives, in order, duplicates only from re-sends.
func TestRsyslogOutageAndKill9(t *testing.T) {
	r := startRsyslog(t)
	cfg := rsyslogSinks(r)
	state := t.TempDir()
	files := map[string]string{"tcp": r.PlainOut, "tls": r.TLSOut}

	// Calm delivery: exact frames, nothing twice.
	a := startChild(t, helperArgs{Config: cfg, StateDir: state, From: 0, Count: 300, Flush: true})
	a.wait(t, 3*time.Minute)
	pids := []int{a.cmd.Process.Pid}
	for i, s := range cfg.Sinks {
		lines := waitLines(t, files[s.Name], 300, time.Minute)
		if len(lines) != 300 {
			t.Fatalf("%s: %d lines, want 300", s.Name, len(lines))
		}
		checkReceived(t, s.Name, cfg.Sinks[i], lines, pids, 299, 1)
	}

	// The receiver stops mid-delivery while alerts keep coming, restarts, and the
	// supervisor is killed mid-delivery.
	b := startChild(t, helperArgs{Config: cfg, StateDir: state, From: 300, Count: 50, Forever: true})
	pids = append(pids, b.cmd.Process.Pid)
	for _, s := range cfg.Sinks {
		if l := waitLines(t, files[s.Name], 600, 2*time.Minute); len(l) < 600 {
			t.Fatalf("%s: only %d lines: the second supervisor does not deliver", s.Name, len(l))
		}
	}
	r.Stop()
	stoppedAt := b.lastAccepted()
	time.Sleep(2 * time.Second)
	waitFor(t, 30*time.Second, "the supervisor to accept alerts while the receiver is down", func() bool {
		return b.lastAccepted() >= stoppedAt+100
	})
	r.Start()
	for _, s := range cfg.Sinks {
		seen := len(readLines(t, files[s.Name]))
		if l := waitLines(t, files[s.Name], seen+300, 2*time.Minute); len(l) < seen+300 {
			t.Fatalf("%s: delivery did not resume after the receiver restarted (%d lines)", s.Name, len(l))
		}
	}
	if err := syscall.Kill(b.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b.done
	killedAt := b.lastAccepted()
	t.Logf("receiver stopped after alert %d was accepted; supervisor killed after accepting alerts 0..%d", stoppedAt, killedAt)

	// A new supervisor on the same spool delivers the rest, and more.
	c := startChild(t, helperArgs{Config: cfg, StateDir: state, From: killedAt + 1, Count: 100, Flush: true})
	c.wait(t, 3*time.Minute)
	pids = append(pids, c.cmd.Process.Pid)
	last := killedAt + 100
	for i, s := range cfg.Sinks {
		lines := readLines(t, files[s.Name])
		dups := checkReceived(t, s.Name, cfg.Sinks[i], lines, pids, last, 4)
		t.Logf("%s: %d frames for alerts 0..%d, %d duplicates (re-sent after the restart or the kill)", s.Name, len(lines), last, dups)
	}
}

var _ = context.Background
var _ = os.Getpid

// TestRsyslogBurst spools a burst of alerts while the receiver is down, starts it
// and measures delivery. DOMAINM_ALERT_BURST sets the count (make bench-alerts:
// 100000); the default keeps make test short.
func TestRsyslogBurst(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 2000
	}
	if v := os.Getenv("DOMAINM_ALERT_BURST"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("DOMAINM_ALERT_BURST=%q: want a positive count", v)
		}
	}
	r := startRsyslog(t)
	r.Stop()
	cfg := rsyslogSinks(r)
	cfg.Sinks = cfg.Sinks[:1] // plain TCP; DOMAINM_ALERT_BURST_TLS=1 for TLS
	out := r.PlainOut
	if os.Getenv("DOMAINM_ALERT_BURST_TLS") != "" {
		cfg.Sinks, out = rsyslogSinks(r).Sinks[1:], r.TLSOut
	}
	cfg.Sinks[0].Confirm = time.Second // the default
	state := t.TempDir()
	d, err := New(cfg, state, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())

	start := time.Now()
	for i := 0; i < n; i += 1000 {
		evs := make([]Event, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			evs = append(evs, testEvent(j))
		}
		if err := d.EmitAll(evs); err != nil {
			t.Fatal(err)
		}
	}
	accept := time.Since(start)
	st := d.Status()[0]
	fileSize := d.sp.fileSize()
	if st.Spooled != n {
		t.Fatalf("%d alerts spooled with the receiver down, want %d", st.Spooled, n)
	}

	r.Start()
	start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	lines := waitLines(t, out, n, time.Minute)
	dups := checkReceived(t, cfg.Sinks[0].Name, cfg.Sinks[0], lines, []int{os.Getpid()}, n-1, 2)
	report := fmt.Sprintf("alert burst: %d alerts spooled in %v (%.0f/s) with the receiver down; spool %d bytes counted, file %.1f MiB (%d B/alert); delivered to rsyslogd over %s in %v: %.0f alerts/s (%.1f MiB/s of frames), %d duplicates",
		n, accept.Round(time.Millisecond), float64(n)/accept.Seconds(), st.Bytes, float64(fileSize)/(1<<20), fileSize/int64(n),
		strings.ToUpper(cfg.Sinks[0].Transport), took.Round(time.Millisecond), float64(n)/took.Seconds(), float64(frameBytes(lines))/(1<<20)/took.Seconds(), dups)
	t.Log(report)
	fmt.Println(report)
}

func frameBytes(lines []string) int {
	n := 0
	for _, l := range lines {
		n += len(l)
	}
	return n
}

// TestRsyslogHungReceiver freezes rsyslogd (SIGSTOP) while a burst is sent: the
// sinks report that the receiver is not reading, keep the connection rather than
// re-sending on a new one, and once it resumes everything arrives once, in order.
func TestRsyslogHungReceiver(t *testing.T) {
	r := startRsyslog(t)
	cfg := rsyslogSinks(r)
	for i := range cfg.Sinks {
		cfg.Sinks[i].Timeout = 2 * time.Second
	}
	d, err := New(cfg, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	const n = 15000     // ~20 MB of frames: more than the socket buffers hold
	emitN(t, d, 0, 100) // connections up
	flush(t, d)
	r.Pause()
	paused := time.Now()
	for i := 100; i < n; i += 500 {
		var evs []Event
		for j := i; j < min(i+500, n); j++ {
			evs = append(evs, testEvent(j))
		}
		if err := d.EmitAll(evs); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "both sinks to report a receiver that does not read", func() bool {
		for _, st := range d.Status() {
			if !strings.Contains(st.LastError, "not reading") {
				return false
			}
		}
		return true
	})
	t.Logf("stall reported %v after the receiver froze", time.Since(paused).Round(time.Millisecond))
	if err := d.Healthy(0); err == nil {
		t.Error("Healthy() = nil with a hung receiver")
	}
	r.Resume()
	resumed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d alerts delivered %v after the receiver resumed", n, time.Since(resumed).Round(time.Millisecond))
	files := map[string]string{"tcp": r.PlainOut, "tls": r.TLSOut}
	for i, s := range cfg.Sinks {
		lines := waitLines(t, files[s.Name], n, time.Minute)
		if dups := checkReceived(t, s.Name, cfg.Sinks[i], lines, []int{os.Getpid()}, n-1, 1); dups != 0 || len(lines) != n {
			t.Fatalf("%s: %d lines, %d duplicates; want %d, none", s.Name, len(lines), dups, n)
		}
	}
	for _, st := range d.Status() {
		if !st.Up {
			t.Errorf("%s not up again after delivering: %+v", st.Name, st)
		}
	}
}
