package alert

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func payload(i int, size int) []byte {
	s := fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("p", size))
	return []byte(s)
}

func TestSpoolOrderAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	sp, _, err := openSpool(path, map[string]int64{"a": 1 << 20, "b": 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := sp.add([]entry{{sev: SevLow, data: payload(i, 10), sinks: []string{"a", "b"}}}); err != nil {
			t.Fatal(err)
		}
	}
	recs, _ := sp.read("a", 0, 4, 1<<20)
	if err := sp.remove("a", recs[3].seq); err != nil {
		t.Fatal(err)
	}
	sp.close()

	sp, orphans, err := openSpool(path, map[string]int64{"a": 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if orphans["b"] != 10 {
		t.Errorf("orphaned spool of removed sink b: %v, want b: 10", orphans)
	}
	if n, _ := sp.stats("a"); n != 6 {
		t.Fatalf("after reopen sink a holds %d, want 6", n)
	}
	recs, _ = sp.read("a", 0, 100, 1<<20)
	for i, r := range recs {
		if want := payload(i+4, 10); string(r.data) != string(want) {
			t.Fatalf("record %d = %s, want %s", i, r.data, want)
		}
	}
	// New events continue the sequence after the old ones.
	sp.add([]entry{{sev: SevLow, data: payload(10, 10), sinks: []string{"a"}}})
	recs, _ = sp.read("a", recs[len(recs)-1].seq, 100, 1<<20)
	if len(recs) != 1 || string(recs[0].data) != string(payload(10, 10)) {
		t.Fatalf("appended after reopen: %v", recs)
	}
}

func TestSpoolFullDropsLeastSevere(t *testing.T) {
	sp, _, err := openSpool(filepath.Join(t.TempDir(), "s.db"), map[string]int64{"a": 10 * (1000 + 1 + recordOverhead)})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	add := func(i int, sev Severity) []drop {
		d, err := sp.add([]entry{{sev: sev, data: payload(i, 1000-len(payload(i, 0))), sinks: []string{"a"}}})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	sevs := []Severity{SevInfo, SevLow, SevMedium, SevInfo, SevHigh, SevLow, SevInfo, SevMedium, SevCritical, SevLow}
	for i, s := range sevs {
		if d := add(i, s); len(d) != 0 {
			t.Fatalf("event %d dropped %v before the spool was full", i, d)
		}
	}
	// Full: a high event pushes out the oldest info event (0).
	if d := add(10, SevHigh); len(d) != 1 || d[0].sev != SevInfo {
		t.Fatalf("drops %v, want one info", d)
	}
	// An info event cannot push out anything more severe than info... but info 3 and 6 remain, equal: the new one goes.
	if d := add(11, SevInfo); len(d) != 1 || d[0].sev != SevInfo {
		t.Fatalf("drops %v, want the new info", d)
	}
	recs, _ := sp.read("a", 0, 100, 1<<30)
	var got []string
	for _, r := range recs {
		got = append(got, string(r.data[:6]))
	}
	want := `{"n":1 {"n":2 {"n":3 {"n":4 {"n":5 {"n":6 {"n":7 {"n":8 {"n":9 {"n":1`
	if strings.Join(got, " ") != want {
		t.Fatalf("spool after drops:\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
	if string(recs[9].data[:7]) != `{"n":10` {
		t.Fatalf("last is %s, want event 10", recs[9].data[:7])
	}
	// Critical events push out info, then low, then medium, in age order.
	var dropped []Severity
	for i := 12; i < 17; i++ {
		for _, d := range add(i, SevCritical) {
			dropped = append(dropped, d.sev)
		}
	}
	if fmt.Sprint(dropped) != "[info info low low low]" {
		t.Fatalf("dropped %v, want [info info low low low]", dropped)
	}
}

// TestSpoolFullAlerts fills a sink's spool (its receiver is down) and checks the
// loud part: the drop metric and a health alert about it, which goes to the spools.
func TestSpoolFullAlerts(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Hostname: "h", Sinks: []SinkConfig{{Name: "down", Type: TypeJSONL, Transport: "tcp",
		Address: fmt.Sprintf("127.0.0.1:%d", freePort(t)), SpoolMaxBytes: 64 << 10, BackoffMin: time.Hour, BackoffMax: time.Hour}}}
	d, err := New(cfg, t.TempDir(), slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	for i := 0; i < 200; i++ {
		e := testEvent(i)
		e.SetSeverity(SevInfo)
		if err := d.Emit(e); err != nil {
			t.Fatal(err)
		}
	}
	if st := d.Status()[0]; st.Bytes > 64<<10 || st.Spooled == 0 || st.Up {
		t.Fatalf("status %+v: want a bounded, non-empty spool and the sink down", st)
	}
	if v := counterValue(t, reg, "domainm_alerts_dropped_total", "reason", "spool_full"); v < 100 {
		t.Fatalf("domainm_alerts_dropped_total{reason=spool_full} = %v, want >= 100", v)
	}
	waitFor(t, 10*time.Second, "an alert-spool-full health alert in the spool", func() bool {
		recs, _ := d.sp.read("down", 0, 1000, 1<<30)
		found := false
		for _, r := range recs {
			found = found || (r.sev == SevHigh && strings.Contains(string(r.data), `"action":"alert-spool-full"`))
		}
		return found
	})
	if v := gaugeValue(t, reg, "domainm_alert_spool_bytes"); v <= 0 || v > 64<<10 {
		t.Fatalf("domainm_alert_spool_bytes = %v", v)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	sum := 0.0
	for _, m := range family(t, reg, name) {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	ms := family(t, reg, name)
	if len(ms) == 0 {
		t.Fatalf("no metric %s", name)
	}
	return ms[0].GetGauge().GetValue()
}

func family(t *testing.T, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	return nil
}

// BenchmarkEmit measures one Emit at a time: each waits for its own commit (fsync).
func BenchmarkEmit(b *testing.B) {
	d, err := New(Config{Hostname: "h", Sinks: []SinkConfig{{Name: "f", Type: TypeFile, Path: filepath.Join(b.TempDir(), "a.jsonl")}}}, b.TempDir(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close(context.Background())
	e := testEvent(1)
	for b.Loop() {
		if err := d.Emit(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEmitParallel: concurrent Emits share commits.
func BenchmarkEmitParallel(b *testing.B) {
	d, err := New(Config{Hostname: "h", Sinks: []SinkConfig{{Name: "f", Type: TypeFile, Path: filepath.Join(b.TempDir(), "a.jsonl")}}}, b.TempDir(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close(context.Background())
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		e := testEvent(1)
		for pb.Next() {
			if err := d.Emit(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestSpoolShrinksWhenEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	sp, _, err := openSpool(path, map[string]int64{"a": 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	var entries []entry
	for i := 0; i < 20000; i++ {
		entries = append(entries, entry{sev: SevLow, data: payload(i, 1000), sinks: []string{"a"}})
	}
	if _, err := sp.add(entries); err != nil {
		t.Fatal(err)
	}
	if !sp.oldest("a").IsZero() {
		t.Error("payloads have no @timestamp: oldest should be zero")
	}
	if err := sp.remove("a", 1<<62); err != nil {
		t.Fatal(err)
	}
	big := sp.fileSize()
	sp.close()
	if big <= compactAbove {
		t.Fatalf("spool file only %d bytes; the test needs more than %d", big, compactAbove)
	}
	sp, _, err = openSpool(path, map[string]int64{"a": 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if sp.fileSize() >= big/4 {
		t.Fatalf("empty spool reopened at %d bytes (was %d)", sp.fileSize(), big)
	}
	sp.add([]entry{{sev: SevLow, data: []byte(`{"@timestamp":"2026-01-01T00:00:00Z"}`), sinks: []string{"a"}}})
	if got := sp.oldest("a"); !got.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("oldest = %v", got)
	}
}
