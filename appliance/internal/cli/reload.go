package cli

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/appliance/internal/supervisor"
)

// cliLiveKeys are the keys the daemon's wiring changes live on reload, beside the
// supervisor's (supervisor.LiveKeys).
var cliLiveKeys = []string{"log.level"}

// reloader re-reads the configuration on SIGHUP (systemctl reload), as the rules are:
// what can change live changes, what cannot is reported by name and keeps its running
// value until a restart, and a file with errors keeps the running configuration (each
// error logged as FILE:LINE: KEY: ...). File sinks are reopened either way, so that a
// logrotate postrotate works.
type reloader struct {
	log    *slog.Logger
	level  *slog.LevelVar
	sup    interface{ ApplyConfig(*config.Config) }
	alerts interface {
		Reopen() []string
		Emit(alert.Event) error
	}
	// flagLevel is set when --log-level overrides the file's log.level; fileLevel is
	// then the file's own, which a reload compares with.
	flagLevel bool
	fileLevel string

	mu      sync.Mutex
	cur     *config.Config // as running: restart-only keys keep their started values
	last    time.Time      // the last reload attempt
	lastErr string         // its error, "" when it succeeded
	pending []string       // keys changed in the file that need a restart

	ok, at  prometheus.Gauge
	results *prometheus.CounterVec
}

func newReloader(cfg *config.Config, log *slog.Logger, level *slog.LevelVar, reg prometheus.Registerer) (*reloader, error) {
	r := &reloader{cur: cfg, log: log, level: level,
		ok: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_config_last_reload_successful",
			Help: "1 if the last configuration reload (SIGHUP) read a valid file (or there was none yet), 0 if the file had errors and the running configuration stayed."}),
		at: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last read successfully (the start, or the last good reload)."}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "domainm_config_reloads_total",
			Help: "Configuration reloads (SIGHUP) by result: ok, failed (the file had errors; the running configuration stayed)."}, []string{"result"}),
	}
	r.ok.Set(1)
	r.at.SetToCurrentTime()
	r.results.WithLabelValues("ok")
	r.results.WithLabelValues("failed")
	for _, c := range []prometheus.Collector{r.ok, r.at, r.results} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering reload metrics: %w", err)
		}
	}
	return r, nil
}

// reload re-reads the configuration file and applies what can change live.
func (r *reloader) reload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if names := r.alerts.Reopen(); len(names) > 0 {
		r.log.Info("alert files reopened", "sinks", strings.Join(names, ","))
	}
	r.last = time.Now()
	nc, err := config.Load(r.cur.Path)
	if err != nil {
		r.lastErr = err.Error()
		r.ok.Set(0)
		r.results.WithLabelValues("failed").Inc()
		for _, line := range strings.Split(err.Error(), "\n") {
			r.log.Error("configuration not reloaded: the running one stays", "problem", line)
		}
		r.emit(alert.SevMedium, "reload-failed", fmt.Sprintf("configuration %s not reloaded, the running configuration stays: %s",
			r.cur.Path, strings.ReplaceAll(err.Error(), "\n", "; ")))
		return
	}
	r.lastErr = ""
	r.ok.Set(1)
	r.at.SetToCurrentTime()
	r.results.WithLabelValues("ok").Inc()
	live := append(slices.Clone(supervisor.LiveKeys), cliLiveKeys...)
	var applied, restart []string
	next := *r.cur
	was := *r.cur
	if r.flagLevel {
		was.Log.Level = r.fileLevel
		r.fileLevel = nc.Log.Level
	}
	for _, c := range config.Diff(&was, nc) {
		switch {
		case c.Key == "log.level" && r.flagLevel:
			restart = append(restart, c.Key+" (--log-level given)")
		case slices.ContainsFunc(live, func(k string) bool {
			return c.Key == k || strings.HasPrefix(c.Key, k+"[") || strings.HasPrefix(c.Key, k+".")
		}):
			applied = append(applied, c.String())
		default:
			restart = append(restart, c.String())
		}
	}
	next.Memory.Interval, next.Memory.StallTimeout = nc.Memory.Interval, nc.Memory.StallTimeout
	next.Disk.Interval, next.Control.QuiesceTimeout = nc.Disk.Interval, nc.Control.QuiesceTimeout
	next.Rules.Disable, next.Rules.Exceptions = nc.Rules.Disable, nc.Rules.Exceptions
	next.Disk.AggregateAbove = nc.Disk.AggregateAbove
	if !r.flagLevel {
		next.Log.Level = nc.Log.Level
		lv, _ := config.ParseLogLevel(nc.Log.Level)
		r.level.Set(lv)
	}
	r.sup.ApplyConfig(&next)
	r.cur = &next
	r.pending = restart
	for _, c := range restart {
		r.log.Warn("configuration changed, but only a restart applies it (systemctl restart domainm)", "key", c)
	}
	r.log.Info("configuration reloaded", "file", r.cur.Path, "applied", strings.Join(applied, ", "), "needs_restart", len(restart))
	msg := fmt.Sprintf("configuration %s reloaded", r.cur.Path)
	switch {
	case len(applied)+len(restart) == 0:
		msg += ": nothing changed"
	case len(applied) > 0:
		msg += "; applied: " + strings.Join(applied, ", ")
	}
	sev := alert.SevInfo
	if len(restart) > 0 {
		msg += "; changed but not applied until a restart: " + strings.Join(restart, ", ")
		sev = alert.SevLow
	}
	r.emit(sev, "reloaded", msg)
}

func (r *reloader) emit(sev alert.Severity, condition, msg string) {
	if err := r.alerts.Emit(alert.Health(time.Now(), sev, "config", condition, msg)); err != nil {
		r.log.Error("alert not accepted", "err", err, "action", "config-"+condition)
	}
}

// reloadState is what status shows of the configuration reloads.
type reloadState struct {
	Path        string
	Last        time.Time // zero: never reloaded
	Error       string
	NeedRestart []string
}

func (r *reloader) state() reloadState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return reloadState{Path: r.cur.Path, Last: r.last, Error: r.lastErr, NeedRestart: slices.Clone(r.pending)}
}

// statusExtra is what status shows that only the daemon's wiring knows: version,
// start, the configuration and its reloads.
func (r *reloader) statusExtra(version string, started time.Time) func(*proto.StatusDetail) {
	return func(d *proto.StatusDetail) {
		d.Version, d.StartedAt = version, started.UTC().Format(time.RFC3339Nano)
		d.UptimeSeconds = time.Since(started).Seconds()
		st := r.state()
		d.Config = proto.ConfigStatus{Path: st.Path, ReloadError: st.Error, NeedsRestart: st.NeedRestart}
		if d.Config.NeedsRestart == nil {
			d.Config.NeedsRestart = []string{}
		}
		if !st.Last.IsZero() {
			d.Config.LastReload = st.Last.UTC().Format(time.RFC3339Nano)
		}
	}
}
