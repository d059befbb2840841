package supervisor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/domainm/domainm/memscan"
)

// metrics are the supervisor's Prometheus series.
type metrics struct {
	passes       *prometheus.CounterVec // by result: complete, interrupted, failed
	bytesScanned prometheus.Counter
	bytesTotal   prometheus.Counter
	blocks       *prometheus.CounterVec // by outcome: scanned, zero, unchanged, error
	findings     prometheus.Gauge
	findingsNew  prometheus.Counter
	reloads      *prometheus.CounterVec // by result: ok, failed, empty
	diskChecks   *prometheus.CounterVec // by result: ok, failed
	up           prometheus.Gauge       // 1 while monitoring
	passSeconds  prometheus.Gauge       // duration of the last complete pass
	lastPass     prometheus.Gauge       // unix time of the last complete pass
	lastCheck    prometheus.Gauge       // unix time of the last successful disk check

	findingsUpdated prometheus.Counter     // known findings that matched new content
	findingsEnded   *prometheus.CounterVec // by how: gone, retired
	rules           prometheus.Gauge       // rules in the running set
	rulesEmpty      prometheus.Gauge       // 1 while the rules folder holds no rules
	passDuration    prometheus.Histogram   // complete passes
	passesOverdue   prometheus.Counter     // passes that ran past overdueFactor intervals
	ruleFileSeconds *prometheus.GaugeVec   // by file: scan time of its rules over one probe window
	reloadOK        prometheus.Gauge       // 1 unless the last rules reload failed
	reloadOKAt      prometheus.Gauge       // when rules last loaded without failing
	diskChanges     *prometheus.CounterVec // by change: added, changed, removed, file-match (alerted)
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "domainm_memory_passes_total",
			Help: "Memory passes, by result: complete, partial (reached the end with blocks unscanned: blind spots), interrupted by prepare or stop, failed."}, []string{"result"}),
		bytesScanned: prometheus.NewCounter(prometheus.CounterOpts{Name: "domainm_memory_bytes_scanned_total",
			Help: "Bytes of guest memory handed to YARA (windows incl. overlap)."}),
		bytesTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "domainm_memory_bytes_total",
			Help: "Bytes of guest memory covered by passes, scanned or skipped."}),
		blocks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "domainm_memory_blocks_total",
			Help: "Memory blocks by outcome: scanned, zero (skipped), unchanged (skipped), error."}, []string{"outcome"}),
		findings: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_findings",
			Help: "Memory findings currently present."}),
		findingsNew: prometheus.NewCounter(prometheus.CounterOpts{Name: "domainm_findings_new_total",
			Help: "Memory findings that appeared."}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "domainm_rule_reloads_total",
			Help: "Rule reloads by result: ok, failed (not loaded), empty."}, []string{"result"}),
		diskChecks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "domainm_disk_checks_total",
			Help: "Disk checks by result."}, []string{"result"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_monitoring",
			Help: "1 while the supervisor is monitoring the target's memory, 0 otherwise (starting, quiesced, stopping)."}),
		passSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_memory_pass_seconds",
			Help: "Duration of the last complete memory pass."}),
		lastPass: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_memory_last_pass_timestamp_seconds",
			Help: "When the last complete memory pass ended (alert on time() minus this)."}),
		lastCheck: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_disk_last_check_timestamp_seconds",
			Help: "When the last successful disk check ended."}),
		findingsUpdated: prometheus.NewCounter(prometheus.CounterOpts{Name: "domainm_findings_updated_total",
			Help: "Memory findings already reported that matched new content (memory-match-updated)."}),
		findingsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "domainm_findings_ended_total",
			Help: "Memory findings that ended: gone (no longer matched), retired (rule removed or changed)."}, []string{"how"}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_rules_loaded",
			Help: "Rules in the running set."}),
		rulesEmpty: prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_rules_folder_empty",
			Help: "1 while the rules folder holds no rules (the last good set keeps running), 0 otherwise."}),
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "domainm_memory_pass_duration_seconds",
			Help:    "Duration of complete memory passes (a pass resumed after a migration counts from the resume).",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 14)}), // 0.25 s .. 34 min
		passesOverdue: prometheus.NewCounter(prometheus.CounterOpts{Name: "domainm_memory_passes_overdue_total",
			Help: "Memory passes still running after 3 memory intervals (memory-pass-overdue alerts)."}),
		ruleFileSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "domainm_rule_file_window_seconds",
			Help: "Scan time of each rule file's rules over one window of pseudo-random bytes, measured at load (libyara has no per-rule profiling)."}, []string{"file"}),
	}
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_rules_last_reload_successful",
		Help: "1 if the last rules load or reload did not fail (files left out for not compiling still count as a success: see domainm_health_problem{problem=\"rules-broken\"}), 0 if it failed and the running set stayed."})
	m.reloadOKAt = prometheus.NewGauge(prometheus.GaugeOpts{Name: "domainm_rules_last_reload_success_timestamp_seconds",
		Help: "When the rules last loaded or reloaded without failing."})
	m.diskChanges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "domainm_disk_changes_total",
		Help: "Disk changes alerted, by change: added, changed, removed (file integrity), file-match (YARA in a new or changed file)."}, []string{"change"})
	m.reloadOK.Set(1) // the start loads the rules or fails
	m.reloadOKAt.SetToCurrentTime()
	for _, l := range []string{"added", "changed", "removed", "file-match"} {
		m.diskChanges.WithLabelValues(l)
	}
	// Zero series up front, so dashboards and alerts see them before the first event.
	for _, l := range []string{"complete", "partial", "interrupted", "failed"} {
		m.passes.WithLabelValues(l)
	}
	for _, l := range []string{"scanned", "zero", "unchanged", "error"} {
		m.blocks.WithLabelValues(l)
	}
	for _, l := range []string{"ok", "failed", "empty"} {
		m.reloads.WithLabelValues(l)
	}
	for _, l := range []string{"ok", "failed"} {
		m.diskChecks.WithLabelValues(l)
	}
	for _, l := range []string{"gone", "retired"} {
		m.findingsEnded.WithLabelValues(l)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.passes, m.bytesScanned, m.bytesTotal, m.blocks, m.findings, m.findingsNew, m.reloads, m.diskChecks, m.up, m.passSeconds, m.lastPass, m.lastCheck,
		m.findingsUpdated, m.findingsEnded, m.rules, m.rulesEmpty, m.passDuration, m.passesOverdue, m.ruleFileSeconds,
		m.reloadOK, m.reloadOKAt, m.diskChanges} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) pass(res memscan.PassResult, err error) {
	switch {
	case err != nil:
		m.passes.WithLabelValues("failed").Inc()
		return
	case res.Complete && len(res.Errors) > 0:
		m.passes.WithLabelValues("partial").Inc()
	case res.Complete:
		m.passes.WithLabelValues("complete").Inc()
	default:
		m.passes.WithLabelValues("interrupted").Inc()
	}
	m.bytesScanned.Add(float64(res.BytesScanned))
	m.bytesTotal.Add(float64(res.BytesTotal))
	m.blocks.WithLabelValues("scanned").Add(float64(res.BlocksScanned))
	m.blocks.WithLabelValues("zero").Add(float64(res.BlocksZero))
	m.blocks.WithLabelValues("unchanged").Add(float64(res.BlocksUnchanged))
	m.blocks.WithLabelValues("error").Add(float64(len(res.Errors)))
}
