package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/appliance/internal/metrics"
	"github.com/domainm/domainm/appliance/internal/supervisor"
)

func init() {
	register(command{name: "run", summary: "run the supervisor daemon (continuous monitoring)", run: runRun,
		exits: []exit{
			{ExitClean, "stopped cleanly (SIGTERM, SIGINT); with --check-config: no error (warnings allowed)"},
			{ExitError, "bad configuration or a failure (systemd restarts it); with --check-config: at least one error"},
		},
		examples: []string{
			"domainm run --config /etc/domainm/domainm.toml --check-config",
			"domainm run --log-level debug --log-format json",
		}})
	register(command{name: "status", summary: "ask the running supervisor for its state (control socket)", run: runStatus,
		exits: []exit{
			{ExitClean, "healthy (monitoring, no problem)"},
			{ExitFindings, "answered but not healthy (the /healthz verdict)"},
			{ExitError, "it could not be asked, or reported an error"},
		},
		examples: []string{
			"domainm status",
			"domainm status --json | jq .detail.sinks",
		}})
}

// runStatus asks a running `domainm run` for its status over the control socket.
func runStatus(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "status", "status [--config FILE | --socket PATH] [--json]",
		`Asks the running supervisor for its state over its control socket and prints a
summary: state and health (the problems that keep it from watching the whole target
with rules: rules-empty, memory-blind-spots, ...), target, memory source and the last
pass (when, how long, blocks scanned, unchanged, zero and unscanned), rules (count,
folder, last reload and its result, files that do not compile), disk checks (last
check, baseline age), each alert sink (up, spooled alerts, age of the oldest, last
error), the configuration's last reload and the keys that need a restart, version and
uptime. Nothing is left out for being zero: "never" and 0 are printed.

With --json it prints the control protocol's status response as it is (the fields
above under "detail"), for scripts.`)
	cfgPath := fs.String("config", config.DefaultPath, "configuration `FILE` naming the control socket")
	sock := fs.String("socket", "", "control socket `PATH` (instead of reading --config)")
	asJSON := fs.Bool("json", false, "print the supervisor's reply as JSON (the control protocol's status response)")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	path, err := controlSocket(*cfgPath, *sock)
	if err != nil {
		return ExitError, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := control.Dial(ctx, path)
	if err != nil {
		return ExitError, err
	}
	defer c.Close()
	r, err := c.Do(ctx, control.CmdStatus, nil)
	if err != nil {
		return ExitError, err
	}
	if !r.OK {
		return ExitError, fmt.Errorf("supervisor: %s (%s)", r.Error, r.Code)
	}
	r.ID = nil
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return ExitError, err
		}
	} else if err := printStatus(env.Stdout, r, time.Now()); err != nil {
		return ExitError, err
	}
	if r.Health != nil && !r.Health.Healthy {
		return ExitFindings, nil
	}
	return ExitClean, nil
}

// Bounds of a clean stop: the scan loops, then the alert sinks. The unit's
// TimeoutStopSec leaves room for both.
const (
	stopScans = 10 * time.Second
	stopSinks = 5 * time.Second
)

func runRun(ctx context.Context, env Env, args []string) (int, error) {
	fs := newFlags(env, "run", "run [--config FILE] [--check-config]",
		`Runs Domain M's supervisor: memory passes and disk checks of the target on their
schedules, YARA rules reloaded when the rules folder changes, alerts to every configured
sink, the control socket for migration, and systemd notification (Type=notify, watchdog).
SIGTERM or SIGINT stops it cleanly.

With --check-config it checks the configuration and what it points at, starts nothing
and exits. It reports every problem at once, one line each, as FILE:LINE: KEY: what was
expected (KEY as alerts.sink[0].min_severity), warnings as FILE:LINE: KEY: warning: ...:
  the file: unknown keys, wrong types, invalid values, durations without a unit
  rules.dir: the folder exists and its rules compile (a file that does not compile is a
    warning: domainm run leaves it out, alerts it and reports it in status)
  target.policy: the integrity policy parses
  alerts.sink[N].ca_file, cert_file, key_file: readable, PEM certificates that parse and
    are valid now (expiring within 30 days: a warning), the key goes with the certificate
  target.memory, target.disk: exist (missing: a warning; the target may boot later)`)
	cfgPath := fs.String("config", config.DefaultPath, "configuration `FILE`")
	check := fs.Bool("check-config", false, "check the configuration, the rules, policy, certificates and memory source, and exit")
	logLevel := fs.String("log-level", "", "log `LEVEL`: "+config.LogLevels+"; default: the config's log.level (info)")
	logFormat := fs.String("log-format", "", "log `FORMAT`: text or json; default: the config's log.format (text)")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	// The flags are checked before the file is read, so a typo in them is not hidden
	// behind the file's problems.
	if *logLevel != "" {
		if _, err := config.ParseLogLevel(*logLevel); err != nil {
			return ExitError, fmt.Errorf("--log-level: %w", err)
		}
	}
	if *logFormat != "" {
		if _, err := config.ParseLogFormat(*logFormat); err != nil {
			return ExitError, fmt.Errorf("--log-format: %w", err)
		}
	}
	if *check {
		return checkConfig(env.Stdout, *cfgPath, time.Now())
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return ExitError, err
	}
	fileLevel := cfg.Log.Level
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
	}
	level, _ := config.ParseLogLevel(cfg.Log.Level) // validated by Load
	lv := new(slog.LevelVar)
	lv.Set(level)
	log := config.NewLogger(env.Stderr, lv, cfg.Log.Format)
	v := Version()
	log.Info("domainm starting", "version", v.Version, "commit", v.Commit, "go", v.GoVersion, "libyara", v.Libyara, "config", cfg.Path)
	return ExitClean, runDaemon(ctx, cfg, log, daemonOpts{level: lv, flagLevel: *logLevel != "", fileLevel: fileLevel})
}

// daemonOpts are what runDaemon needs beside the configuration for reloads.
type daemonOpts struct {
	level     *slog.LevelVar // the log level, changed by a reload
	flagLevel bool           // --log-level given: a reload leaves the level alone
	fileLevel string         // the file's log.level at the start (what a reload compares with)
}

// runDaemon wires the alert dispatcher, the metrics listener and the supervisor.
func runDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger, opts daemonOpts) error {
	notify := func(msg string) {
		if _, err := daemon.SdNotify(false, msg); err != nil {
			log.Warn("sd_notify failed", "err", err)
		}
	}
	reg := metrics.NewRegistry()
	v := Version()
	metrics.RegisterBuildInfo(reg, v.Version, v.Commit, v.GoVersion, v.Libyara)

	notify("STATUS=starting alert sinks")
	alerts, err := alert.New(cfg.Alerts, cfg.State.Dir, log, reg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), stopSinks)
		defer cancel()
		if err := alerts.Close(cctx); err != nil {
			log.Error("closing alert sinks", "err", err)
		}
	}()

	var disk supervisor.DiskChecker
	if cfg.Target.Disk != "" {
		if disk, err = newDiskChecker(cfg, log); err != nil {
			return err
		}
	}
	sup, err := supervisor.New(cfg, supervisor.Deps{
		Log:             log,
		Alerts:          alerts,
		Notify:          notify,
		Watchdog:        watchdogInterval(log),
		Disk:            disk,
		ShutdownTimeout: stopScans,
		Metrics:         reg,
		AlertsHealthy:   func() error { return alerts.Healthy(5 * time.Minute) },
	})
	if err != nil {
		return err
	}
	alerts.SetTarget(sup.Target) // the dispatcher's own health alerts name the target too
	if cfg.Metrics.Listen != "" {
		// /healthz says what status, the metrics and the state log say: the
		// supervisor's health model (undelivered alerts are one of its problems).
		srv, err := metrics.Serve(cfg.Metrics.Listen, reg, sup.Healthy, log.With("component", "metrics"))
		if err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			srv.Close(cctx)
		}()
	}
	// SIGHUP (systemctl reload) re-reads the configuration (reload.go), reopens the
	// file sinks (logrotate) and recompiles the rules at once, without waiting for a
	// file change: for rules on filesystems where inotify sees nothing (NFS, FUSE).
	if opts.level == nil {
		opts.level = new(slog.LevelVar)
	}
	rl, err := newReloader(cfg, log, opts.level, reg)
	if err != nil {
		return err
	}
	rl.sup, rl.alerts, rl.flagLevel, rl.fileLevel = sup, alerts, opts.flagLevel, opts.fileLevel
	sup.SetStatusExtra(rl.statusExtra(v.Version, time.Now()))
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			log.Info("reload requested (SIGHUP)")
			rl.reload()
			sup.ReloadRules()
		}
	}()
	return sup.Run(ctx)
}

// watchdogInterval is systemd's WatchdogSec for this process, or 0.
func watchdogInterval(log *slog.Logger) time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("ignoring watchdog settings", "err", err)
		return 0
	}
	if d > 0 {
		log.Info("systemd watchdog enabled", "interval", d)
	}
	return d
}
