package alert

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestSendTestFastSink: domainm alert test reports a file sink as delivered even when
// the sink delivers (and removes the event from its queue) before SendTest looks. It
// once looked the event up in the queue after the commit, and a file sink that had
// already written it was reported "not in the sink's spool" (a CI failure).
func TestSendTestFastSink(t *testing.T) {
	out := filepath.Join(t.TempDir(), "a.jsonl")
	d := newTestDispatcher(t,
		SinkConfig{Name: "local", Type: TypeFile, Path: out},
		SinkConfig{Name: "pager", Type: TypeFile, Path: out + ".2", MinSeverity: SevCritical})
	for i := range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := d.SendTest(ctx, TestEvent(time.Now(), SevHigh, "test"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 2 || !res[0].Delivered || res[0].Skipped != "" {
			t.Fatalf("test alert %d: %+v, want local delivered", i, res)
		}
		if res[1].Delivered || res[1].Skipped == "" {
			t.Fatalf("test alert %d: %+v, want pager skipped (below its min_severity)", i, res[1])
		}
	}
	if n := len(readLines(t, out)); n != 100 {
		t.Errorf("%s holds %d events, want the 100 test alerts", out, n)
	}
}
