package cli

import (
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startLogged starts domainm run with args and returns its stderr once the first log
// line is there and it has stopped (SIGTERM).
func startLogged(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(domainmBinary(t), append([]string{"run"}, args...)...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	waitUntil(t, "a memory pass", 60*time.Second, func() bool { return strings.Contains(stderr.String(), "pass") })
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(stopBound):
		t.Fatal("domainm did not stop")
	}
	return stderr.String()
}

// jsonLines checks that every line of log is one JSON object and returns them.
func jsonLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// TestRunLogFormat: log.format = "json" in the file or --log-format json makes every
// line of the daemon's log one JSON object; log.level takes "DEBUG"; the flags override
// the file; a bad level lists the valid ones.
func TestRunLogFormat(t *testing.T) {
	s := newSetup(t, "", "\n[log]\nformat = \"json\"\nlevel = \"DEBUG\"\n")
	lines := jsonLines(t, startLogged(t, "--config", s.cfg))
	if lines[0]["msg"] != "domainm starting" || lines[0]["config"] != s.cfg || lines[0]["level"] != "INFO" {
		t.Errorf("first line %v", lines[0])
	}
	debug := false
	for _, l := range lines {
		debug = debug || l["level"] == "DEBUG"
	}
	if !debug {
		t.Error("log.level = \"DEBUG\" logged no debug line")
	}

	s = newSetup(t, "", "\n[log]\nformat = \"text\"\nlevel = \"error\"\n")
	lines = jsonLines(t, startLogged(t, "--config", s.cfg, "--log-format", "JSON", "--log-level", "info"))
	if lines[0]["msg"] != "domainm starting" {
		t.Errorf("first line %v", lines[0])
	}
	// The text format, as before, for comparison.
	text := startLogged(t, "--config", s.cfg, "--log-level", "Info")
	if !strings.HasPrefix(text, "time=") || !strings.Contains(text, `msg="domainm starting"`) {
		t.Errorf("text log: %q", text)
	}

	cmd := exec.Command(domainmBinary(t), "run", "--config", s.cfg, "--log-level", "verbose")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != ExitError || !strings.Contains(string(out), `--log-level: expected a log level: debug, info, warn (or warning), error; got "verbose"`) {
		t.Errorf("--log-level verbose: exit %d\n%s", cmd.ProcessState.ExitCode(), out)
	}
}
