package alert

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func newTestDispatcher(t *testing.T, sinks ...SinkConfig) *Dispatcher {
	t.Helper()
	for i := range sinks {
		if sinks[i].BackoffMin == 0 {
			sinks[i].BackoffMin, sinks[i].BackoffMax = 50*time.Millisecond, 200*time.Millisecond
		}
	}
	d, err := New(Config{Hostname: "domainm-test", Sinks: sinks}, t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(context.Background()) })
	return d
}

func emitN(t *testing.T, d *Dispatcher, from, n int) {
	t.Helper()
	var evs []Event
	for i := from; i < from+n; i++ {
		evs = append(evs, testEvent(i))
	}
	if err := d.EmitAll(evs); err != nil {
		t.Fatal(err)
	}
}

func flush(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// seqOf reads domainm.seq from an event's JSON.
func seqOf(t *testing.T, raw []byte) int {
	t.Helper()
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("not an event: %v: %.200s", err, raw)
	}
	return int(e.DomainM.Seq)
}

// TestRsyslogUDPAndJSONLinesTLS sends syslog over UDP and JSON lines over TLS
// (newline framing, which rsyslog's imtcp accepts) to a real rsyslogd.
func TestRsyslogUDPAndJSONLinesTLS(t *testing.T) {
	r := startRsyslog(t)
	udp := SinkConfig{Name: "udp", Type: TypeSyslog, Transport: "udp", Address: fmt.Sprintf("127.0.0.1:%d", r.UDPPort), Message: "text", Facility: "local3"}
	jl := SinkConfig{Name: "jsonl", Type: TypeJSONL, Transport: "tls", Address: fmt.Sprintf("127.0.0.1:%d", r.TLSPort),
		CAFile: r.PKI.CA, CertFile: r.PKI.ClientCert, KeyFile: r.PKI.ClientKey, Confirm: 100 * time.Millisecond}
	d := newTestDispatcher(t, udp, jl)
	emitN(t, d, 0, 50)
	flush(t, d)

	lines := waitLines(t, r.UDPOut, 50, time.Minute)
	f := newSyslogFormat(d.runners[0].cfg)
	for i, l := range lines {
		e := testEvent(i)
		fillEvent(&e, "domainm-test")
		raw, _ := marshalEvent(&e)
		if want := string(f.frame(&e, raw)); l != want {
			t.Fatalf("udp frame %d\n got %q\nwant %q", i, l, want)
		}
		if !strings.HasPrefix(l, fmt.Sprintf("<%d>1 ", 19*8+int(e.Severity()))) {
			t.Fatalf("udp frame %d: PRI for local3: %.10s", i, l)
		}
	}
	if len(lines) != 50 {
		t.Fatalf("udp: %d datagrams received, want 50 (loopback does not lose them)", len(lines))
	}
	lines = waitLines(t, r.TLSOut, 50, time.Minute)
	for i, l := range lines {
		e := testEvent(i)
		fillEvent(&e, "domainm-test")
		raw, _ := marshalEvent(&e)
		if l != string(raw) {
			t.Fatalf("jsonl line %d\n got %s\nwant %s", i, l, raw)
		}
	}
	if len(lines) != 50 {
		t.Fatalf("jsonl: %d lines, want 50", len(lines))
	}
}

func TestFileSinkRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log", "alerts.jsonl")
	d := newTestDispatcher(t, SinkConfig{Name: "file", Type: TypeFile, Path: path, MaxBytes: 20 << 10, Keep: 2, Batch: 10})
	emitN(t, d, 0, 100)
	flush(t, d)
	var seqs []int
	for _, p := range []string{path + ".2", path + ".1", path} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > 20<<10 {
			t.Errorf("%s: %d bytes, over max_bytes", p, len(data))
		}
		for _, l := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
			seqs = append(seqs, seqOf(t, l))
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("keep = 2, but alerts.jsonl.3 exists")
	}
	// The newest files hold an unbroken tail ending at 99.
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("file sink order broken: %v", seqs)
		}
	}
	if seqs[len(seqs)-1] != 99 || len(seqs) < 20 {
		t.Fatalf("file sink kept %v", seqs)
	}
}

// TestJournalNativeProtocol points the journal sink at a datagram socket the test
// owns and decodes what arrives as journald does.
func TestJournalNativeProtocol(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "journal.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	d := newTestDispatcher(t, SinkConfig{Name: "journal", Type: TypeJournal, Socket: sock})
	e := testEvent(7)
	e.Message = "two\nlines"
	if err := d.Emit(e); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	pc.SetReadDeadline(time.Now().Add(time.Minute))
	n, err := pc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	fields := parseJournal(t, buf[:n])
	want := map[string]string{
		"MESSAGE": "two\nlines", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "domainm", "SYSLOG_FACILITY": "4",
		"DOMAINM_SEVERITY": "medium", "DOMAINM_RULE": "Test_Rule_0", "DOMAINM_RULESET": "test",
		"DOMAINM_ADDRESS": "0x107000", "DOMAINM_TARGET_UUID": "7f8d2a9e-1c3b-4d5e-9f00-aabbccddeeff",
		"DOMAINM_ACTION": "memory-match", "DOMAINM_EVENT_ID": e.Event.ID,
	}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("%s = %q, want %q", k, fields[k], v)
		}
	}
	if seqOf(t, []byte(fields["DOMAINM_EVENT_JSON"])) != 7 {
		t.Error("DOMAINM_EVENT_JSON does not hold the event")
	}
	flush(t, d)
}

// parseJournal decodes the native protocol: KEY=VALUE\n, or KEY\n<le64 size>VALUE\n.
func parseJournal(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("unterminated field %q", b)
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			b = b[nl+1:]
			continue
		}
		rest := b[nl+1:]
		if len(rest) < 8 {
			t.Fatal("short binary field")
		}
		size := binary.LittleEndian.Uint64(rest)
		if uint64(len(rest)-8) < size+1 || rest[8+size] != '\n' {
			t.Fatal("bad binary field")
		}
		out[string(line)] = string(rest[8 : 8+size])
		b = rest[9+size:]
	}
	return out
}

// fakeES answers _bulk requests with a scripted status per document, like
// Elasticsearch (which cannot run here); it records what was indexed.
type fakeES struct {
	mu       sync.Mutex
	indexed  map[string]int // _id → seq
	order    []int
	requests int
	script   func(req int, seq int) int // status for a document
	whole    func(req int) int          // status for the request, 0 = answer per item
}

func (f *fakeES) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if r.URL.Path != "/_bulk" || r.Header.Get("Content-Type") != "application/x-ndjson" || r.Header.Get("Authorization") != "ApiKey k3y" {
		http.Error(w, "bad request", 400)
		return
	}
	if f.whole != nil {
		if st := f.whole(f.requests); st != 0 {
			http.Error(w, "busy", st)
			return
		}
	}
	body, _ := io.ReadAll(r.Body)
	lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
	type item map[string]map[string]any
	var items []item
	anyErr := false
	for i := 0; i+1 < len(lines); i += 2 {
		var action map[string]struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		}
		if err := json.Unmarshal(lines[i], &action); err != nil || action["create"].Index != "alerts" {
			http.Error(w, "bad action line", 400)
			return
		}
		id := action["create"].ID
		var e Event
		json.Unmarshal(lines[i+1], &e)
		st := f.script(f.requests, int(e.DomainM.Seq))
		if st == 201 {
			if _, dup := f.indexed[id]; dup {
				st = 409
			} else {
				f.indexed[id] = int(e.DomainM.Seq)
				f.order = append(f.order, int(e.DomainM.Seq))
			}
		}
		anyErr = anyErr || st != 201
		items = append(items, item{"create": {"_id": id, "status": st}})
	}
	json.NewEncoder(w).Encode(map[string]any{"took": 1, "errors": anyErr, "items": items})
}

func TestHTTPBulk(t *testing.T) {
	es := &fakeES{indexed: map[string]int{}}
	es.whole = func(req int) int {
		if req == 1 {
			return 503 // the first request fails as a whole: retried
		}
		return 0
	}
	es.script = func(req, seq int) int {
		switch {
		case seq == 13:
			return 400 // mapping error: dropped for good
		case seq == 20 && req < 4:
			return 429 // overloaded: retried from here
		}
		return 201
	}
	srv := httptest.NewServer(es)
	defer srv.Close()
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, []byte("k3y\n"), 0o600)
	d := newTestDispatcher(t, SinkConfig{Name: "es", Type: TypeHTTP, URL: srv.URL + "/_bulk", Index: "alerts", APIKeyFile: key, Batch: 25})
	emitN(t, d, 0, 40)
	flush(t, d)
	es.mu.Lock()
	defer es.mu.Unlock()
	var want []int
	for i := 0; i < 40; i++ {
		if i != 13 {
			want = append(want, i)
		}
	}
	// _bulk is not transactional: the documents after the 429 in that request were
	// indexed; the retry re-sends them and they come back 409, not twice.
	got := append([]int(nil), es.order...)
	sort.Ints(got)
	if fmt.Sprint(got) != fmt.Sprint(want) || len(es.indexed) != len(want) {
		t.Fatalf("indexed %v\nwant    %v", es.order, want)
	}
	if es.requests < 4 {
		t.Fatalf("%d requests: the 503 and the 429 must have been retried", es.requests)
	}
}

func TestFileSinkEndsPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	os.WriteFile(path, []byte(`{"cut short`), 0o640)
	d := newTestDispatcher(t, SinkConfig{Name: "file", Type: TypeFile, Path: path})
	emitN(t, d, 0, 2)
	flush(t, d)
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3 || lines[0] != `{"cut short` || seqOf(t, []byte(lines[2])) != 1 {
		t.Fatalf("file after a partial line:\n%s", data)
	}
}

func TestEmitAfterClose(t *testing.T) {
	d := newTestDispatcher(t, SinkConfig{Name: "file", Type: TypeFile, Path: filepath.Join(t.TempDir(), "a.jsonl")})
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := d.Emit(testEvent(0)); err != ErrClosed {
		t.Fatalf("Emit after Close: %v, want ErrClosed", err)
	}
}

// TestTLSVerifiesServer: without the CA (system roots), or with a server name the
// certificate does not have, nothing is sent, and the sink reports why.
func TestTLSVerifiesServer(t *testing.T) {
	r := startRsyslog(t)
	addr := fmt.Sprintf("127.0.0.1:%d", r.TLSPort)
	reg := prometheus.NewRegistry()
	sinks := []SinkConfig{
		{Name: "noca", Type: TypeSyslog, Transport: "tls", Address: addr, CertFile: r.PKI.ClientCert, KeyFile: r.PKI.ClientKey},
		{Name: "wrongname", Type: TypeSyslog, Transport: "tls", Address: addr, CAFile: r.PKI.CA, ServerName: "other.example",
			CertFile: r.PKI.ClientCert, KeyFile: r.PKI.ClientKey},
	}
	for i := range sinks {
		sinks[i].BackoffMin, sinks[i].BackoffMax = 50*time.Millisecond, 200*time.Millisecond
	}
	d, err := New(Config{Hostname: "h", Sinks: sinks}, t.TempDir(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close(context.Background())
	emitN(t, d, 0, 3)
	waitFor(t, time.Minute, "both sinks to fail server verification", func() bool {
		for _, st := range d.Status() {
			if !strings.Contains(st.LastError, "certificate") {
				return false
			}
		}
		return true
	})
	for _, st := range d.Status() {
		if st.Up || st.Spooled != 3 {
			t.Errorf("%s: %+v: want 3 spooled, sink down", st.Name, st)
		}
	}
	if n := counterValue(t, reg, "domainm_alert_delivery_failures_total", "reason", "tls"); n < 2 {
		t.Errorf("delivery failures with reason tls: %v, want >= 2", n)
	}
	if err := d.Healthy(0); err == nil || !strings.Contains(err.Error(), "noca") || !strings.Contains(err.Error(), "wrongname") {
		t.Errorf("Healthy: %v", err)
	}
	if l := readLines(t, r.TLSOut); len(l) != 0 {
		t.Fatalf("rsyslog received %d lines through an unverified connection", len(l))
	}
}

func TestHTTPSBulkVerifiesServer(t *testing.T) {
	es := &fakeES{indexed: map[string]int{}, script: func(int, int) int { return 201 }}
	srv := httptest.NewTLSServer(es)
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writePEM(t, ca, "CERTIFICATE", srv.Certificate().Raw)
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("k3y"), 0o600)
	good := SinkConfig{Name: "good", Type: TypeHTTP, URL: srv.URL + "/_bulk", Index: "alerts", APIKeyFile: key, CAFile: ca}
	bad := good
	bad.Name, bad.CAFile = "bad", ""
	d := newTestDispatcher(t, good, bad)
	emitN(t, d, 0, 5)
	waitFor(t, time.Minute, "the good sink to deliver and the bad one to fail verification", func() bool {
		st := d.Status()
		return st[0].Spooled == 0 && strings.Contains(st[1].LastError, "certificate")
	})
	es.mu.Lock()
	defer es.mu.Unlock()
	if len(es.indexed) != 5 {
		t.Fatalf("%d documents indexed, want 5 (from the verified sink only)", len(es.indexed))
	}
}

func TestHTTPBulkTooLarge(t *testing.T) {
	es := &fakeES{indexed: map[string]int{}, script: func(int, int) int { return 201 }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 8<<10 {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		es.ServeHTTP(w, r)
	}))
	defer srv.Close()
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, []byte("k3y"), 0o600)
	d := newTestDispatcher(t, SinkConfig{Name: "es", Type: TypeHTTP, URL: srv.URL + "/_bulk", Index: "alerts", APIKeyFile: key})
	emitN(t, d, 0, 40)
	big := testEvent(40)
	big.Message = strings.Repeat("x", 10<<10) // can never fit
	d.Emit(big)
	emitN(t, d, 41, 2)
	flush(t, d)
	es.mu.Lock()
	defer es.mu.Unlock()
	got := append([]int(nil), es.order...)
	sort.Ints(got)
	if len(got) != 42 || got[39] != 39 || got[40] != 41 {
		t.Fatalf("indexed %v: want 0..39, 41, 42 (40 is too large alone)", got)
	}
}
