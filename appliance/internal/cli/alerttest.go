package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/internal/units"
)

func init() {
	register(command{name: "alert test", summary: "send a test alert through every configured sink and report each", run: runAlertTest,
		exits: []exit{
			{ExitClean, "every sink delivered the test alert"},
			{ExitFindings, "at least one did not (failed, timed out or filtered by its min_severity)"},
			{ExitError, "the supervisor could not be asked (not running, refused)"},
		},
		examples: []string{
			"domainm alert test",
			"domainm alert test --severity critical --timeout 30s --json",
		}})
}

// runAlertTest asks the running supervisor to send one test event through every sink,
// as operators check a syslog path with logger or a scanner with EICAR.
func runAlertTest(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "alert test", "alert test [--config FILE | --socket PATH] [--severity LEVEL] [--timeout DURATION] [--json]",
		`Asks the running supervisor (domainm run) to send one test alert (event.action
alert-test, a health event naming the target) through every configured sink, the way
real alerts go: spooled, then delivered by each sink's own loop. It waits until each
sink has delivered it, or --timeout, and prints one line per sink: delivered (and how
long it took), FAILED with the sink's last error (the alert stays spooled and is
delivered when the sink works again), or skipped (the sink's min_severity filters the
test alert's level out; --severity critical reaches every sink).`)
	cfgPath := fs.String("config", config.DefaultPath, "configuration `FILE` naming the control socket")
	sock := fs.String("socket", "", "control socket `PATH` (instead of reading --config)")
	sev := fs.String("severity", "high", "the test alert's `LEVEL`: critical, high, medium, low or info")
	timeoutFlag := units.Duration(10 * time.Second)
	fs.Var(&timeoutFlag, "timeout", "how long to wait for the sinks (`DURATION`: 10s, 1m)")
	asJSON := fs.Bool("json", false, "print the supervisor's answer as JSON (one object per sink)")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	if _, err := alert.ParseSeverity(*sev); err != nil {
		return ExitError, fmt.Errorf("--severity: %w", err)
	}
	timeout := time.Duration(timeoutFlag)
	if timeout <= 0 {
		return ExitError, fmt.Errorf("--timeout: want a positive duration such as 10s, got %v", timeout)
	}
	path, err := controlSocket(*cfgPath, *sock)
	if err != nil {
		return ExitError, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	c, err := control.Dial(ctx, path)
	if err != nil {
		return ExitError, err
	}
	defer c.Close()
	r, err := c.Do(ctx, proto.CmdAlertTest, proto.AlertTestArgs{Severity: *sev, WaitMs: timeout.Milliseconds(), By: requester()})
	if err != nil {
		return ExitError, err
	}
	if !r.OK {
		return ExitError, fmt.Errorf("supervisor: %s (%s)", r.Error, r.Code)
	}
	code := ExitClean
	for _, s := range r.AlertTest {
		if !s.Delivered {
			code = ExitFindings
		}
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r.AlertTest); err != nil {
			return ExitError, err
		}
		return code, nil
	}
	if len(r.AlertTest) == 0 {
		fmt.Fprintln(env.Stdout, "no alert sink is configured ([[alerts.sink]] in the configuration)")
		return ExitFindings, nil
	}
	for _, s := range r.AlertTest {
		switch {
		case s.Delivered:
			fmt.Fprintf(env.Stdout, "%-16s %-8s delivered in %s\n", s.Sink, s.Type, seconds(s.Seconds))
		case s.Skipped != "":
			fmt.Fprintf(env.Stdout, "%-16s %-8s skipped: %s\n", s.Sink, s.Type, s.Skipped)
		default:
			fmt.Fprintf(env.Stdout, "%-16s %-8s FAILED after %s: %s\n", s.Sink, s.Type, seconds(s.Seconds), s.Error)
		}
	}
	if len(r.AlertTest) > 0 {
		fmt.Fprintf(env.Stdout, "test alert event.id %s\n", r.AlertTest[0].EventID)
	}
	return code, nil
}

// controlSocket is --socket, or control.socket of the configuration file.
func controlSocket(cfgPath, sock string) (string, error) {
	if sock != "" {
		return sock, nil
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return "", err
	}
	if cfg.Control.Socket == "" {
		return "", fmt.Errorf("%s: control.socket is off", cfg.Path)
	}
	return cfg.Control.Socket, nil
}

// requester names who runs the command, for audit trails: user (uid) on host.
func requester() string {
	name := fmt.Sprint(os.Getuid())
	if u, err := user.Current(); err == nil {
		name = fmt.Sprintf("%s (uid %s)", u.Username, u.Uid)
	}
	host, _ := os.Hostname()
	return name + " on " + host
}

// seconds prints a duration in seconds with a unit.
func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}
