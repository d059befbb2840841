package proto

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadStateLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), StateLogFile)
	os.WriteFile(p, []byte(`{"time":"2026-01-01T00:00:00.5Z","state":"monitoring","pid":7}`+"\n"+
		`{"time":"2026-01-01T00:00:01Z","state":"quiesced","cursor":4096,"pid":7}`+"\n"+
		`{"time":"2026-01-01T00:00:02Z","state":"monitoring","cursor":"0x2000","pid":7}`+"\n"+
		`{"time":"2026-01-01T00:00:03Z","state":"monitoring","host":"b","pid":7}`+"\n"+
		`{"time":"2026-01-01T00:00:04Z","state":"monitoring","hypervisor_host":"c","pid":7}`+"\n"), 0o600)
	recs, err := ReadStateLog(p)
	// An older log's integer cursor and "host", and the current "0x..." and
	// "hypervisor_host", all read.
	if err != nil || len(recs) != 5 || recs[1].State != StateQuiesced || *recs[1].Cursor != 4096 || *recs[2].Cursor != 0x2000 ||
		recs[1].At.Sub(recs[0].At).Milliseconds() != 500 || recs[3].Host != "b" || recs[4].Host != "c" || recs[4].PID != 7 {
		t.Fatalf("records %+v, %v", recs, err)
	}
	// Written with the alert schema's name.
	if b, _ := json.Marshal(recs[3]); !strings.Contains(string(b), `"hypervisor_host":"b"`) || strings.Contains(string(b), `"host"`) {
		t.Errorf("written as %s", b)
	}
	os.WriteFile(p, []byte(`{"time":"2026-01-01T00:00:00Z","state":"monitoring"}`+"\nnot json\n"), 0o600)
	if _, err := ReadStateLog(p); err == nil || !strings.Contains(err.Error(), StateLogFile+":2:") {
		t.Errorf("bad line: %v", err)
	}
}
