package alert

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dispatcher's Prometheus series. Labels: sink (the configured
// name), severity (critical..info), reason.
type metrics struct {
	emitted   *prometheus.CounterVec // accepted into a sink's spool
	delivered *prometheus.CounterVec
	failures  *prometheus.CounterVec // failed delivery attempts (connects, writes, requests)
	dropped   *prometheus.CounterVec // spool_full, rejected (the receiver refused it for good), undecodable
	up        *prometheus.GaugeVec   // 1 while the sink's last delivery attempt worked
	heldBack  *prometheus.CounterVec // alerts the sink's rate_limit held back (delivered later)

	unregister func()
}

func newMetrics(reg prometheus.Registerer, sp *spool, sinks []SinkConfig) (*metrics, error) {
	m := &metrics{
		emitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domainm_alerts_emitted_total", Help: "Alerts accepted into a sink's spool.",
		}, []string{"sink", "severity"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domainm_alerts_delivered_total", Help: "Alerts a sink delivered (removed from its spool).",
		}, []string{"sink", "severity"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domainm_alert_delivery_failures_total", Help: "Failed delivery attempts (connect, write, request, lost connection).",
		}, []string{"sink", "reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "domainm_alerts_dropped_total", Help: "Alerts dropped: spool_full (lowest severity first), rejected by the receiver, undecodable.",
		}, []string{"sink", "severity", "reason"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "domainm_alert_sink_up", Help: "1 if the sink's last delivery attempt succeeded.",
		}, []string{"sink"}),
	}
	m.heldBack = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "domainm_alerts_held_back_total", Help: "Alerts the sink's rate_limit held back in its spool, each counted once (they are delivered later, in order; none is dropped).",
	}, []string{"sink"})
	cs := []prometheus.Collector{m.emitted, m.delivered, m.failures, m.dropped, m.up, m.heldBack,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "domainm_alert_spool_file_bytes", Help: "Size of the alert spool file on disk.",
		}, func() float64 { return float64(sp.fileSize()) }),
	}
	for _, s := range sinks {
		name := s.Name
		labels := prometheus.Labels{"sink": name}
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "domainm_alert_spool_events", Help: "Alerts waiting in the sink's spool.", ConstLabels: labels,
			}, func() float64 { n, _ := sp.stats(name); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "domainm_alert_spool_bytes", Help: "Bytes the sink's spooled alerts take (counted against spool_max_bytes).", ConstLabels: labels,
			}, func() float64 { _, b := sp.stats(name); return float64(b) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "domainm_alert_spool_oldest_seconds", Help: "Age of the oldest alert waiting in the sink's spool (0 when empty).", ConstLabels: labels,
			}, func() float64 {
				if t := sp.oldest(name); !t.IsZero() {
					return time.Since(t).Seconds()
				}
				return 0
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "domainm_alert_spool_max_bytes", Help: "The sink's spool_max_bytes.", ConstLabels: labels,
			}, func() float64 { return float64(s.SpoolMaxBytes) }),
		)
		m.up.WithLabelValues(name).Set(0)
		m.zeroSeries(name)
	}
	m.unregister = func() {}
	if reg == nil {
		return m, nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs {
				reg.Unregister(done)
			}
			return nil, err
		}
	}
	m.unregister = func() {
		for _, c := range cs {
			reg.Unregister(c)
		}
	}
	return m, nil
}

// failureReasons are the reason labels of domainm_alert_delivery_failures_total (reason).
var failureReasons = []string{"connect", "tls", "timeout", "write", "connection_lost", "stalled", "send"}

// zeroSeries makes every series of sink exist from the start, at 0, so that a
// dashboard or an alert rule (rate(...) > 0) sees them before the first event.
func (m *metrics) zeroSeries(sink string) {
	m.heldBack.WithLabelValues(sink)
	for _, r := range failureReasons {
		m.failures.WithLabelValues(sink, r)
	}
	for sev := range sevNames {
		m.emitted.WithLabelValues(sink, sev.String())
		m.delivered.WithLabelValues(sink, sev.String())
		for _, r := range []string{"spool_full", "rejected", "undecodable"} {
			m.dropped.WithLabelValues(sink, sev.String(), r)
		}
	}
}
