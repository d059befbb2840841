package alert

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/domainm/domainm/detectors"
)

// TestDispatcherNamesTarget: the dispatcher's own health alert (a sink's spool full)
// names the watched VM the supervisor gave it, like every other alert.
func TestDispatcherNamesTarget(t *testing.T) {
	cfg := Config{Hostname: "h", Sinks: []SinkConfig{{Name: "down", Type: TypeJSONL, Transport: "tcp",
		Address: fmt.Sprintf("127.0.0.1:%d", freePort(t)), SpoolMaxBytes: 64 << 10, BackoffMin: time.Hour, BackoffMax: time.Hour}}}
	d, err := New(cfg, t.TempDir(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	d.SetTarget(func() detectors.Target { return detectors.Target{Name: "web2", UUID: "uuid-2", Host: "hv2"} })
	for i := 0; i < 200; i++ {
		e := testEvent(i)
		e.SetSeverity(SevInfo)
		if err := d.Emit(e); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "an alert-spool-full health alert in the spool", func() bool {
		recs, _ := d.sp.read("down", 0, 1000, 1<<30)
		for _, r := range recs {
			var e Event
			if json.Unmarshal(r.data, &e) != nil || e.Event.Action != "alert-spool-full" {
				continue
			}
			if tg := e.DomainM.Target; tg == nil || tg.Name != "web2" || tg.UUID != "uuid-2" || e.Host == nil || e.Host.ID != "uuid-2" {
				t.Fatalf("alert-spool-full does not name the target: %s", r.data)
			}
			return true
		}
		return false
	})
}
