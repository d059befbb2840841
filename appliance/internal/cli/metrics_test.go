package cli

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/domainm/domainm/diskscan/ext4test"
)

// scrape parses the daemon's /metrics with Prometheus' own text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse as the Prometheus text format: %v", err)
	}
	return mfs
}

// series is the value of the family's series whose labels include want (nil when
// there is none).
func series(mf *dto.MetricFamily, want map[string]string) *float64 {
	if mf == nil {
		return nil
	}
next:
	for _, m := range mf.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		var v float64
		switch {
		case m.Counter != nil:
			v = m.Counter.GetValue()
		case m.Gauge != nil:
			v = m.Gauge.GetValue()
		case m.Histogram != nil:
			v = float64(m.Histogram.GetSampleCount())
		}
		return &v
	}
	return nil
}

// TestMetricsExposition scrapes the real daemon's /metrics with Prometheus' text
// parser: every domainm_ family follows Prometheus' naming conventions (snake case
// with the domainm_ prefix, HELP text, counters and only counters end in _total, base
// units: seconds and bytes, histograms for distributions), the operator's series are
// there with their types from the first scrape (delivery failures per sink and reason
// at 0 before anything failed), and the disk-change counter counts a file changed in
// the target's image.
func TestMetricsExposition(t *testing.T) {
	img := ext4test.Image(t, map[string]string{"usr/bin/tool": "\x7fELF tool"}, 8)
	port := freePort(t)
	s := newSetup(t, fmt.Sprintf("disk = %q\n", img), fmt.Sprintf("\n[disk]\ninterval = \"1s\"\n\n[metrics]\nlisten = \"127.0.0.1:%d\"\n", port))
	n := listenNotify(t, s.dir)
	startDaemon(t, s.cfg, n.path, 0)
	waitUntil(t, "READY=1", 60*time.Second, func() bool { return n.index("READY=1") >= 0 })
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	mfs := scrape(t, url)

	name := regexp.MustCompile(`^domainm_[a-z][a-z0-9_]*[a-z0-9]$`)
	badUnit := regexp.MustCompile(`_(ms|us|ns|milliseconds|microseconds|minutes|hours|days|kb|mb|gb|kib|mib|gib|percent)(_|$)`)
	for n, mf := range mfs {
		if !strings.HasPrefix(n, "domainm_") {
			continue // the Go runtime's and the process's own collectors
		}
		if !name.MatchString(n) || strings.Contains(n, "__") {
			t.Errorf("%s: not a snake-case name with the domainm_ prefix", n)
		}
		if strings.TrimSpace(mf.GetHelp()) == "" {
			t.Errorf("%s: no HELP", n)
		}
		isCounter := mf.GetType() == dto.MetricType_COUNTER
		if isCounter != strings.HasSuffix(n, "_total") {
			t.Errorf("%s: type %v; counters, and only counters, end in _total", n, mf.GetType())
		}
		if badUnit.MatchString(n) {
			t.Errorf("%s: use base units (seconds, bytes)", n)
		}
		if mf.GetType() == dto.MetricType_HISTOGRAM && !strings.HasSuffix(n, "_seconds") && !strings.HasSuffix(n, "_bytes") {
			t.Errorf("%s: a histogram without a unit", n)
		}
	}
	want := map[string]dto.MetricType{
		"domainm_build_info":                                  dto.MetricType_GAUGE,
		"domainm_rules_loaded":                                dto.MetricType_GAUGE,
		"domainm_rules_last_reload_successful":                dto.MetricType_GAUGE,
		"domainm_rules_last_reload_success_timestamp_seconds": dto.MetricType_GAUGE,
		"domainm_config_last_reload_successful":               dto.MetricType_GAUGE,
		"domainm_config_reloads_total":                        dto.MetricType_COUNTER,
		"domainm_memory_pass_duration_seconds":                dto.MetricType_HISTOGRAM,
		"domainm_disk_changes_total":                          dto.MetricType_COUNTER,
		"domainm_alert_delivery_failures_total":               dto.MetricType_COUNTER,
		"domainm_alerts_dropped_total":                        dto.MetricType_COUNTER,
	}
	for n, typ := range want {
		if mf := mfs[n]; mf == nil || mf.GetType() != typ {
			t.Errorf("%s: missing or not a %v", n, typ)
		}
	}
	for _, c := range []struct {
		family string
		labels map[string]string
		value  float64
	}{
		{"domainm_alert_delivery_failures_total", map[string]string{"sink": "local", "reason": "connect"}, 0},
		{"domainm_alert_delivery_failures_total", map[string]string{"sink": "local", "reason": "tls"}, 0},
		{"domainm_alerts_dropped_total", map[string]string{"sink": "local", "severity": "critical", "reason": "spool_full"}, 0},
		{"domainm_disk_changes_total", map[string]string{"change": "changed"}, 0},
		{"domainm_disk_changes_total", map[string]string{"change": "file-match"}, 0},
		{"domainm_rules_loaded", nil, 1},
		{"domainm_rules_last_reload_successful", nil, 1},
		{"domainm_config_last_reload_successful", nil, 1},
	} {
		if v := series(mfs[c.family], c.labels); v == nil || *v != c.value {
			t.Errorf("first scrape: %s%v = %v, want %v", c.family, c.labels, v, c.value)
		}
	}

	// A file of the target's disk changes after the baseline: counted once.
	waitUntil(t, "the baseline", 60*time.Second, func() bool {
		return len(s.alertsWith(t, "disk-baseline-created", "")) == 1
	})
	ext4test.Overwrite(t, img, "/usr/bin/tool", []byte("\x7fELF TOOL")) // in place, same size
	waitUntil(t, "the change counted", 60*time.Second, func() bool {
		v := series(scrape(t, url)["domainm_disk_changes_total"], map[string]string{"change": "changed"})
		return v != nil && *v == 1
	})
	waitUntil(t, "a pass in the histogram", 30*time.Second, func() bool {
		v := series(scrape(t, url)["domainm_memory_pass_duration_seconds"], nil)
		return v != nil && *v >= 1
	})
}
