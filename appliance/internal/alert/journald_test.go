package alert

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// startJournald runs a real systemd-journald in a private mount namespace whose
// /run is a fresh tmpfs with /run/systemd and /run/log bound to folders of the test:
// its native socket and its journal files appear in the test's folders, and the
// host's /run is untouched. It returns the socket path and the journal folder.
func startJournald(t *testing.T) (socket, journalDir string) {
	t.Helper()
	const journald = "/lib/systemd/systemd-journald"
	for _, tool := range []string{journald, "unshare", "journalctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for the journal test (apt-get install systemd util-linux): %v", tool, err)
		}
	}
	dir := t.TempDir()
	sd, logDir := filepath.Join(dir, "systemd"), filepath.Join(dir, "log")
	for _, d := range []string{sd, logDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := `set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd /run/log
mount --bind "$1" /run/systemd
mount --bind "$2" /run/log
exec ` + journald
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", sd, logDir)
	out, err := os.Create(filepath.Join(dir, "journald.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig: a test binary killed by -timeout takes its daemons with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting journald: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGTERM) // sh exec'd journald: same pid
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	socket = filepath.Join(sd, "journal", "socket")
	waitFor(t, 30*time.Second, "journald's socket", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "journald.out"))
			t.Fatalf("journald exited: %s", b)
		default:
		}
		_, err := os.Stat(socket)
		return err == nil
	})
	return socket, filepath.Join(logDir, "journal")
}

// TestJournaldReal sends alerts to a real systemd-journald and reads them back
// with journalctl.
func TestJournaldReal(t *testing.T) {
	socket, journalDir := startJournald(t)
	d := newTestDispatcher(t, SinkConfig{Name: "journal", Type: TypeJournal, Socket: socket})
	evs := []Event{testEvent(0), testEvent(1), testEvent(2)}
	evs[1].Message = "a message\nof two lines"
	if err := d.EmitAll(evs); err != nil {
		t.Fatal(err)
	}
	flush(t, d)

	var entries []map[string]any
	waitFor(t, time.Minute, "3 entries in the journal", func() bool {
		out, err := exec.Command("journalctl", "-D", journalDir, "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=domainm").Output()
		if err != nil {
			return false
		}
		entries = entries[:0]
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e map[string]any
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("journalctl output: %v", err)
			}
			entries = append(entries, e)
		}
		return len(entries) >= 3
	})
	if len(entries) != 3 {
		t.Fatalf("%d entries, want 3", len(entries))
	}
	for i, e := range entries {
		fillEvent(&evs[i], "domainm-test")
		want := map[string]string{
			"MESSAGE": evs[i].Message, "PRIORITY": strconv.Itoa(int(evs[i].Severity())),
			"DOMAINM_EVENT_ID": evs[i].Event.ID, "DOMAINM_RULE": evs[i].Rule.Name,
			"DOMAINM_SEVERITY": evs[i].Severity().String(), "DOMAINM_ADDRESS": evs[i].DomainM.Matches[0].Address,
		}
		for k, v := range want {
			if e[k] != v {
				t.Errorf("entry %d: %s = %v, want %q", i, k, e[k], v)
			}
		}
		js, _ := e["DOMAINM_EVENT_JSON"].(string)
		if seqOf(t, []byte(js)) != i {
			t.Errorf("entry %d: DOMAINM_EVENT_JSON is not alert %d", i, i)
		}
	}
}
