package alert

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
)

// The integration tests run "the supervisor" as a child process: this test binary
// re-executed with DOMAINM_ALERT_HELPER set, emitting numbered alerts through a
// Dispatcher, so that the test can kill -9 it mid-delivery.
const helperEnv = "DOMAINM_ALERT_HELPER"

type helperArgs struct {
	Config   Config
	StateDir string
	From     int  // first alert number
	Count    int  // alerts to emit; with Forever, per round
	Forever  bool // keep emitting until killed
	Flush    bool // wait until all is delivered, then exit 0
}

func TestMain(m *testing.M) {
	if v := os.Getenv(helperEnv); v != "" {
		os.Exit(helperMain(v))
	}
	os.Exit(m.Run())
}

// testBase is the fixed time of alert 0; alert i is i milliseconds later.
var testBase = time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)

// testEvent is alert number i, the same in every process.
func testEvent(i int) Event {
	sev := []string{"critical", "high", "medium", "low", "info"}[i%5]
	f := detectors.Finding{
		Detector: "yara-memory", Rule: "Test_Rule_" + strconv.Itoa(i%7), Namespace: "test",
		Tags: []string{"test"}, Meta: map[string]string{"severity": sev, "description": `quote " backslash \ bracket ] é`},
		Time:   testBase.Add(time.Duration(i) * time.Millisecond),
		Target: detectors.Target{Name: `web1 "prod" \ [x]`, UUID: "7f8d2a9e-1c3b-4d5e-9f00-aabbccddeeff", Host: "hv1"},
	}
	sm := detectors.StringMatch{Name: "$a", Offset: uint64(0x100000 + i*0x1000), Length: 11}
	sm.SetData([]byte("evil-marker"))
	f.Matches = []detectors.StringMatch{sm}
	e := FromFinding(f, StateNew)
	e.DomainM.Seq = uint64(i)
	e.Event.Created = e.Timestamp
	e.Event.ID = occurrenceID(&e)
	e.Observer.Hostname = "domainm-test"
	return e
}

func helperMain(arg string) int {
	var a helperArgs
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: helperLogLevel()}))
	d, err := New(a.Config, a.StateDir, log, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	next := a.From
	for round := 0; round == 0 || a.Forever; round++ {
		for n := 0; n < a.Count; {
			var evs []Event
			for ; n < a.Count && len(evs) < 50; n++ {
				evs = append(evs, testEvent(next))
				next++
			}
			if err := d.EmitAll(evs); err != nil {
				fmt.Fprintln(os.Stderr, "helper: emit:", err)
				return 2
			}
			fmt.Printf("accepted %d\n", next-1) // durable from here on
			if a.Forever {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	if a.Flush {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := d.Flush(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 2
		}
	}
	if err := d.Close(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	return 0
}

// helperCmd prepares the child process.
func helperCmd(t testing.TB, a helperArgs) *exec.Cmd {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	return cmd
}

func helperLogLevel() slog.Level {
	if os.Getenv("DOMAINM_ALERT_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}
