package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/domainm/domainm/appliance/alert"
	"github.com/domainm/domainm/appliance/config"
	"github.com/domainm/domainm/appliance/supervisor"
)

func init() {
	register(command{name: "run", summary: "run the supervisor daemon (continuous monitoring)", run: runRun})
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

With --check-config it only reads and validates the configuration and exits: 0 when the
file is good, 2 with one line per problem (file:line: key: what was expected).`)
	cfgPath := fs.String("config", config.DefaultPath, "configuration `FILE`")
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parse(env, fs, args); err != nil {
		return ExitError, err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return ExitError, fmt.Errorf("--log-level: %w", err)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return ExitError, err
	}
	if *check {
		fmt.Fprintf(env.Stdout, "%s: configuration is valid\n", cfg.Path)
		return ExitClean, nil
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
	return ExitClean, runDaemon(ctx, cfg, log)
}

// runDaemon wires the alert dispatcher, the metrics listener and the supervisor.
func runDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	notify := func(msg string) {
		if _, err := daemon.SdNotify(false, msg); err != nil {
			log.Warn("sd_notify failed", "err", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

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
	})
	if err != nil {
		return err
	}
	if cfg.Metrics.Listen != "" {
		stop, err := serveMetrics(cfg.Metrics.Listen, reg, sup, alerts, log)
		if err != nil {
			return err
		}
		defer stop()
	}
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

// serveMetrics serves /metrics (Prometheus) and /healthz on addr.
func serveMetrics(addr string, reg *prometheus.Registry, sup *supervisor.Supervisor, alerts *alert.Dispatcher, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		st := sup.Status(r.Context())
		var problems []error
		if st.State != "monitoring" && st.State != "quiesced" {
			problems = append(problems, fmt.Errorf("state %s", st.State))
		}
		if err := sup.Healthy(); err != nil {
			problems = append(problems, err)
		}
		if err := alerts.Healthy(5 * time.Minute); err != nil {
			problems = append(problems, err)
		}
		if err := errors.Join(problems...); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "ok %s passes=%s\n", st.State, strconv.Itoa(st.Passes))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
