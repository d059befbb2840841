package proto

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadStateLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), StateLogFile)
	os.WriteFile(p, []byte(`{"time":"2026-01-01T00:00:00.5Z","state":"monitoring","pid":7}`+"\n"+
		`{"time":"2026-01-01T00:00:01Z","state":"quiesced","cursor":4096,"pid":7}`+"\n"+
		`{"time":"2026-01-01T00:00:02Z","state":"monitoring","cursor":"0x2000","pid":7}`+"\n"), 0o600)
	recs, err := ReadStateLog(p)
	// An older log's integer cursor and the current "0x..." both read.
	if err != nil || len(recs) != 3 || recs[1].State != StateQuiesced || *recs[1].Cursor != 4096 || *recs[2].Cursor != 0x2000 ||
		recs[1].At.Sub(recs[0].At).Milliseconds() != 500 {
		t.Fatalf("records %+v, %v", recs, err)
	}
	os.WriteFile(p, []byte(`{"time":"2026-01-01T00:00:00Z","state":"monitoring"}`+"\nnot json\n"), 0o600)
	if _, err := ReadStateLog(p); err == nil || !strings.Contains(err.Error(), StateLogFile+":2:") {
		t.Errorf("bad line: %v", err)
	}
}
