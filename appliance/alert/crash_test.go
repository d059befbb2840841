package alert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"
)

// maxCrashDups bounds the alerts a stream receiver may get twice after the
// supervisor is killed mid-stream: those sent but not yet acknowledged by the
// receiver's TCP stack, and those acknowledged within the last ackPersist.
const maxCrashDups = 300

// TestRsyslogKill9Duplicates kills the sending supervisor (SIGKILL) while it
// delivers a steady stream (2,500 alerts/s) to a real rsyslogd over TCP and TLS
// with the default confirm (1s), starts a new one on the same spool, and counts by
// event id the alerts the receiver got twice: nothing is lost or reordered, and the
// re-sent run is short.
func TestRsyslogKill9Duplicates(t *testing.T) {
	r := startRsyslog(t)
	cfg := rsyslogSinks(r)
	for i := range cfg.Sinks {
		cfg.Sinks[i].Confirm = time.Second // the default
	}
	state := t.TempDir()
	files := map[string]string{"tcp": r.PlainOut, "tls": r.TLSOut}

	a := startChild(t, helperArgs{Config: cfg, StateDir: state, From: 0, Count: 50, Forever: true})
	for _, s := range cfg.Sinks {
		if l := waitLines(t, files[s.Name], 4000, 3*time.Minute); len(l) < 4000 {
			t.Fatalf("%s: only %d lines: the supervisor does not deliver", s.Name, len(l))
		}
	}
	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	killedAt := a.lastAccepted()
	seen := map[string]int{}
	for _, s := range cfg.Sinks {
		seen[s.Name] = len(readLines(t, files[s.Name]))
	}

	b := startChild(t, helperArgs{Config: cfg, StateDir: state, From: killedAt + 1, Count: 100, Flush: true})
	b.wait(t, 3*time.Minute)
	pids := []int{a.cmd.Process.Pid, b.cmd.Process.Pid}
	last := killedAt + 100
	for i, s := range cfg.Sinks {
		lines := waitLines(t, files[s.Name], last+1, time.Minute)
		dups := checkReceived(t, s.Name, cfg.Sinks[i], lines, pids, last, 2)
		t.Logf("%s: killed after accepting alerts 0..%d, %d of them received before the kill; %d frames for alerts 0..%d: %d duplicates",
			s.Name, killedAt, seen[s.Name], len(lines), last, dups)
		if dups > maxCrashDups {
			t.Errorf("%s: %d alerts received twice after kill -9 of the sender, want at most %d", s.Name, dups, maxCrashDups)
		}
	}
}

// esStandIn is a stand-in for Elasticsearch's _bulk API (Elasticsearch cannot run
// here), as far as delivery needs it: NDJSON action and document lines; "create"
// with an _id that exists is a 409 version conflict and changes nothing, "index"
// with an _id replaces the document, an action without _id gets a generated one.
// It keeps the documents by _id and counts them by event.id.
type esStandIn struct {
	mu        sync.Mutex
	docs      map[string]string // _id → event.id
	byEvent   map[string]int    // event.id → documents
	conflicts int
	autoID    int
	holdAfter int           // documents; then the next request is indexed and its answer held
	held      chan struct{} // closed when a request is held
	release   chan struct{} // close to answer it
}

func newESStandIn(holdAfter int) *esStandIn {
	return &esStandIn{docs: map[string]string{}, byEvent: map[string]int{}, holdAfter: holdAfter,
		held: make(chan struct{}), release: make(chan struct{})}
}

func (es *esStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != "POST" || r.URL.Path != "/_bulk" {
		http.Error(w, "not _bulk", 400)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	lines := bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n"))
	if len(lines)%2 != 0 {
		http.Error(w, `{"error":"action without a document"}`, 400)
		return
	}
	es.mu.Lock()
	hold := es.holdAfter > 0 && len(es.docs) >= es.holdAfter
	if hold {
		es.holdAfter = 0
	}
	var items []map[string]map[string]any
	anyErr := false
	for i := 0; i < len(lines); i += 2 {
		var action map[string]struct {
			ID string `json:"_id"`
		}
		var doc struct {
			Event struct {
				ID string `json:"id"`
			} `json:"event"`
		}
		if json.Unmarshal(lines[i], &action) != nil || len(action) != 1 || json.Unmarshal(lines[i+1], &doc) != nil {
			es.mu.Unlock()
			http.Error(w, `{"error":"malformed bulk line"}`, 400)
			return
		}
		for op, a := range action {
			id, st := a.ID, 201
			if id == "" {
				es.autoID++
				id = fmt.Sprintf("auto-%d", es.autoID)
			}
			old, exists := es.docs[id]
			switch {
			case op == "create" && exists:
				st = 409
				es.conflicts++
			case op == "create" || op == "index":
				if exists {
					es.byEvent[old]--
					st = 200
				}
				es.docs[id] = doc.Event.ID
				es.byEvent[doc.Event.ID]++
			default:
				st = 400
			}
			anyErr = anyErr || st >= 300
			items = append(items, map[string]map[string]any{op: {"_id": id, "status": st}})
		}
	}
	es.mu.Unlock()
	if hold {
		close(es.held)
		<-es.release
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"took": 1, "errors": anyErr, "items": items})
}

func (es *esStandIn) count() int {
	es.mu.Lock()
	defer es.mu.Unlock()
	return len(es.docs)
}

// TestHTTPKill9NoDuplicates kills the sending supervisor (SIGKILL) while a _bulk
// request it sent is indexed but not yet answered, starts a new one on the same
// spool, and counts the documents per event id: the re-sent events come back 409
// and the index holds every alert exactly once.
func TestHTTPKill9NoDuplicates(t *testing.T) {
	es := newESStandIn(2000)
	srv := httptest.NewServer(es)
	defer srv.Close()
	defer func() {
		select {
		case <-es.release:
		default:
			close(es.release)
		}
	}()
	cfg := Config{Hostname: "domainm-test", Sinks: []SinkConfig{{Name: "es", Type: TypeHTTP, URL: srv.URL + "/_bulk",
		Index: "alerts", BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond}}}
	state := t.TempDir()

	a := startChild(t, helperArgs{Config: cfg, StateDir: state, From: 0, Count: 50, Forever: true})
	select {
	case <-es.held:
	case <-time.After(3 * time.Minute):
		t.Fatalf("only %d documents indexed: the supervisor does not deliver", es.count())
	}
	if err := syscall.Kill(a.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	close(es.release)
	killedAt := a.lastAccepted()
	before := es.count()

	b := startChild(t, helperArgs{Config: cfg, StateDir: state, From: killedAt + 1, Count: 100, Flush: true})
	b.wait(t, 3*time.Minute)
	last := killedAt + 100
	es.mu.Lock()
	defer es.mu.Unlock()
	for i := 0; i <= last; i++ {
		id, _ := expectedFrame(cfg.Sinks[0], 0, i)
		if n := es.byEvent[id]; n != 1 {
			t.Errorf("alert %d (event.id %s): %d documents in the index, want 1", i, id, n)
		}
	}
	for id, n := range es.byEvent {
		if n > 1 {
			t.Errorf("event.id %s: %d documents in the index", id, n)
		}
	}
	if es.conflicts == 0 {
		t.Errorf("no 409: the batch answered after the kill was not sent again")
	}
	t.Logf("killed after accepting alerts 0..%d with %d documents indexed and the last answer held; after the restart: %d documents for alerts 0..%d, %d re-sent events answered 409",
		killedAt, before, len(es.docs), last, es.conflicts)
}
