package control

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control/xenstore"
)

// memStore is an in-memory xenstore: writes fire the watches whose path they start with.
type memStore struct {
	mu      sync.Mutex
	nodes   map[string]string
	watches []string
	events  chan xenstore.Event
}

func (m *memStore) Read(p string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.nodes[p]
	if !ok {
		return "", xenstore.ErrNotFound
	}
	return v, nil
}

func (m *memStore) Write(p, v string) error {
	m.mu.Lock()
	m.nodes[p] = v
	ws := append([]string(nil), m.watches...)
	m.mu.Unlock()
	for _, w := range ws {
		if strings.HasPrefix(p, w) {
			m.events <- xenstore.Event{Path: p, Token: "t"}
		}
	}
	return nil
}

func (m *memStore) Watch(p, tok string) error {
	m.mu.Lock()
	m.watches = append(m.watches, p)
	m.mu.Unlock()
	m.events <- xenstore.Event{Path: p, Token: tok}
	return nil
}

func (m *memStore) Events() <-chan xenstore.Event { return m.events }

type countingHandler struct {
	mu       sync.Mutex
	prepares int
	state    string
}

func (h *countingHandler) Status(context.Context) Response {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Response{State: h.state}
}

func (h *countingHandler) Prepare(context.Context) (Response, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.prepares++
	h.state = StateQuiesced
	return Response{State: h.state}, nil
}

func (h *countingHandler) Resume(_ context.Context, a ResumeArgs) (Response, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state = StateMonitoring
	return Response{State: h.state, Source: a.Source}, nil
}

func TestServeXenstore(t *testing.T) {
	st := &memStore{nodes: map[string]string{}, events: make(chan xenstore.Event, 16)}
	h := &countingHandler{state: StateMonitoring}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeXenstore(ctx, st, h, slog.New(slog.DiscardHandler)) }()
	ask := func(req string) Response {
		t.Helper()
		st.Write(XenstoreRequest, req)
		var id struct {
			ID json.RawMessage `json:"id"`
		}
		json.Unmarshal([]byte(req), &id)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			v, err := st.Read(XenstoreResponse)
			var r Response
			if err == nil && json.Unmarshal([]byte(v), &r) == nil && string(r.ID) == string(id.ID) {
				return r
			}
		}
		t.Fatalf("no response to %s", req)
		return Response{}
	}
	if r := ask(`{"id":"p1","cmd":"prepare"}`); !r.OK || r.State != StateQuiesced {
		t.Fatalf("prepare: %+v", r)
	}
	// The same request text again (a watch firing twice) is not carried out again.
	st.Write(XenstoreRequest, `{"id":"p1","cmd":"prepare"}`)
	if r := ask(`{"id":"r1","cmd":"resume","args":{"source":"xen:7","target":{"domid":7}}}`); !r.OK || r.State != StateMonitoring || r.Source != "xen:7" {
		t.Fatalf("resume: %+v", r)
	}
	if h.prepares != 1 {
		t.Fatalf("prepare carried out %d times", h.prepares)
	}
	if r := ask(`{"id":"b1","cmd":"resume"}`); r.OK || r.Code != CodeBadRequest {
		t.Fatalf("resume without args: %+v", r)
	}
	if r := ask(`{"id":"s1","cmd":"prepare","timeout_ms":-1}`); r.OK || r.Code != CodeBadRequest {
		t.Fatalf("negative timeout: %+v", r)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("ServeXenstore returned %v", err)
	}
}

func (m *memStore) Close() error { return nil }

// TestServeDeviceXenbus: control.device = /dev/xen/xenbus serves the protocol over
// xenstore (what a Xen Domain M without virtio-serial configures), and connects again
// when the connection fails.
func TestServeDeviceXenbus(t *testing.T) {
	st := &memStore{nodes: map[string]string{}, events: make(chan xenstore.Event, 16)}
	opens := 0
	defer func(o func() (xenstoreConn, error)) { openXenstore = o }(openXenstore)
	openXenstore = func() (xenstoreConn, error) {
		opens++
		if opens == 1 {
			return nil, errors.New("xenbus not there yet")
		}
		return st, nil
	}
	h := &countingHandler{state: StateMonitoring}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ServeDevice(ctx, xenstore.DevicePath, h, slog.New(slog.DiscardHandler)); close(done) }()
	var r Response
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		st.Write(XenstoreRequest, `{"id":"p1","cmd":"prepare"}`)
		if v, err := st.Read(XenstoreResponse); err == nil && json.Unmarshal([]byte(v), &r) == nil {
			break
		}
	}
	if !r.OK || r.State != StateQuiesced || string(r.ID) != `"p1"` {
		t.Fatalf("prepare over /dev/xen/xenbus: %+v", r)
	}
	if opens != 2 {
		t.Fatalf("connected %d times, want 2 (the first failed)", opens)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeDevice did not return after cancel")
	}
}
