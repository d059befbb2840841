package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// request is what the scripted supervisor saw.
type request struct {
	Conn      int
	ID        uint64 `json:"id"`
	Cmd       string `json:"cmd"`
	Epoch     uint64 `json:"epoch"`
	TimeoutMs int64  `json:"timeout_ms"`
}

// script is a scripted supervisor: each request is answered with what answer returns
// (nil: no answer); it records requests and which connections the client closed.
type script struct {
	mu     sync.Mutex
	reqs   []request
	closed map[int]bool
}

func (s *script) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.reqs...)
}

func (s *script) isClosed(conn int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed[conn]
}

func serve(t *testing.T, answer func(r request) []string) (string, *script) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &script{closed: map[int]bool{}}
	go func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					var r request
					json.Unmarshal(sc.Bytes(), &r)
					r.Conn = n
					s.mu.Lock()
					s.reqs = append(s.reqs, r)
					s.mu.Unlock()
					for _, line := range answer(r) {
						c.Write([]byte(line + "\n"))
					}
				}
				s.mu.Lock()
				s.closed[n] = true
				s.mu.Unlock()
			}()
		}
	}()
	return path, s
}

// After a call times out the client drops the connection (the supervisor sees the
// request abandoned, and its late answer cannot be read as the next one's), connects
// again with a higher epoch, and sends prepare and resume with their epoch and what is
// left of their timeout (issue 8, item 8).
func TestCallAfterTimeoutReconnects(t *testing.T) {
	id := func(r request) string { b, _ := json.Marshal(r.ID); return string(b) }
	path, s := serve(t, func(r request) []string {
		switch {
		case r.Cmd == "status":
			return []string{`{"id":` + id(r) + `,"ok":true,"state":"monitoring","epoch":7}`}
		case r.Cmd == "prepare" && r.Conn == 1:
			return nil // answered never: the supervisor is frozen
		case r.Cmd == "prepare":
			return []string{`{"id":` + id(r) + `,"ok":true,"state":"quiesced"}`}
		case r.Cmd == "resume" && r.Epoch < 9:
			return []string{`{"id":` + id(r) + `,"ok":false,"error":"epoch 9 was accepted since","code":"stale"}`}
		}
		return []string{`{"id":` + id(r) + `,"ok":false,"error":"sampled pages differ","code":"guest_changed"}`}
	})
	ctx := context.Background()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Epoch() != 8 {
		t.Errorf("epoch after dial %d, want 8 (one above the supervisor's 7)", c.Epoch())
	}
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := c.Prepare(tctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered prepare: %v, want deadline exceeded", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !s.isClosed(1) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !s.isClosed(1) {
		t.Error("the connection of the call that timed out is still open")
	}
	ctx, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	r, err := c.Prepare(ctx)
	if err != nil || r.State != StateQuiesced {
		t.Fatalf("second prepare: %+v, %v", r, err)
	}
	_, err = c.Resume(ctx, ResumeArgs{Source: "file:/x", Layout: "flat"})
	var re *RemoteError
	if !errors.As(err, &re) || !errors.Is(err, ErrGuestChanged) || errors.Is(err, ErrStale) {
		t.Fatalf("refused resume: %#v, want a RemoteError matching ErrGuestChanged", err)
	}
	reqs := s.requests()
	want := []struct {
		conn  int
		cmd   string
		epoch uint64
	}{{1, "status", 0}, {1, "prepare", 8}, {2, "status", 0}, {2, "prepare", 9}, {2, "resume", 9}}
	if len(reqs) != len(want) {
		t.Fatalf("requests %+v, want %d", reqs, len(want))
	}
	for i, w := range want {
		if g := reqs[i]; g.Conn != w.conn || g.Cmd != w.cmd || g.Epoch != w.epoch {
			t.Errorf("request %d: %+v, want connection %d %s epoch %d", i, g, w.conn, w.cmd, w.epoch)
		}
	}
	if tm := reqs[1].TimeoutMs; tm <= 0 || tm >= 300 {
		t.Errorf("prepare with a 300 ms context sent timeout_ms %d, want 0 < t < 300", tm)
	}
	if tm := reqs[3].TimeoutMs; tm < 4000 || tm > 4900 {
		t.Errorf("prepare with a 5 s context sent timeout_ms %d, want 5 s less a margin", tm)
	}
}

func TestStaleRefusalIsTyped(t *testing.T) {
	for _, code := range []string{"stale", "expired"} {
		err := error(&RemoteError{Cmd: "resume", Code: code, Msg: "x"})
		if !errors.Is(err, ErrStale) || errors.Is(err, ErrGuestChanged) {
			t.Errorf("code %s: Is(ErrStale) false", code)
		}
	}
}

// TestLateAnswerSkipped: over a virtio-serial port the guest's end outlives the host's
// connections, so a supervisor frozen during prepare and woken later answers the
// abandoned prepare on the next connection, before the answer to what that connection
// asks. The client skips it (it once failed every later call by one: "answered status
// with id 25, want 26"), and an answer left over from an earlier client is skipped too.
func TestLateAnswerSkipped(t *testing.T) {
	id := func(r request) string { b, _ := json.Marshal(r.ID); return string(b) }
	var mu sync.Mutex
	var abandoned string // the id of the prepare that was never answered on its connection
	path, s := serve(t, func(r request) []string {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Cmd == "status" && r.Conn == 1:
			return []string{`{"id":` + id(r) + `,"ok":true,"state":"monitoring","epoch":3}`}
		case r.Cmd == "prepare" && r.Conn == 1:
			abandoned = id(r)
			return nil
		case r.Cmd == "status" && r.Conn == 2:
			return []string{
				`{"id":` + abandoned + `,"ok":true,"state":"quiesced"}`, // the late answer
				`{"id":424242,"ok":true,"state":"monitoring"}`,          // an earlier client's
				`{"id":` + id(r) + `,"ok":true,"state":"quiesced","epoch":4}`}
		}
		return []string{`{"id":` + id(r) + `,"ok":true,"state":"quiesced"}`}
	})
	ctx := context.Background()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := c.Prepare(tctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered prepare: %v, want deadline exceeded", err)
	}
	r, err := c.Prepare(ctx) // connects again: status (late answers first), then prepare
	if err != nil || r.State != StateQuiesced {
		t.Fatalf("prepare after the late answer: %+v, %v", r, err)
	}
	if c.Epoch() != 5 {
		t.Errorf("epoch %d, want 5: the status answer read must be the second connection's own (epoch 4)", c.Epoch())
	}
	if n := len(s.requests()); n != 4 {
		t.Errorf("%d requests, want 4 (status, prepare, status, prepare)", n)
	}
}

// A rollback's resume at the source refused as "resume while monitoring" (wrong_state)
// means, when no resume to the destination was ever sent, that the supervisor never
// quiesced (its prepare timed out and then expired): it still watches the source, and
// ResumeAtSource is done without preparing it again. Once a resume to the destination
// was sent, the same refusal may come from the destination: it is prepared again and
// resumed at the source. (CI at 421d419: the needless second prepare, refused as expired
// under load, left the target paused.)
func TestResumeAtSourceAfterPrepareNeverTaken(t *testing.T) {
	id := func(r request) string { b, _ := json.Marshal(r.ID); return string(b) }
	for _, tc := range []struct {
		name       string
		resumeSent bool
		noState    bool // an older supervisor: no state in the refusal
		want       []string
	}{
		{"prepare never taken", false, false, []string{"status", "resume"}},
		{"older supervisor", false, true, []string{"status", "resume", "status"}},
		{"resume sent", true, false, []string{"status", "resume", "resume", "prepare", "resume"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resumes, prepared := 0, false
			var mu sync.Mutex
			path, s := serve(t, func(r request) []string {
				mu.Lock()
				defer mu.Unlock()
				switch r.Cmd {
				case "status":
					return []string{`{"id":` + id(r) + `,"ok":true,"state":"monitoring","epoch":1}`}
				case "prepare":
					prepared = true
					return []string{`{"id":` + id(r) + `,"ok":true,"state":"quiesced"}`}
				}
				resumes++
				if (tc.resumeSent && resumes == 1) || prepared {
					return []string{`{"id":` + id(r) + `,"ok":true,"state":"monitoring"}`}
				}
				state := `,"state":"monitoring"`
				if tc.noState {
					state = ""
				}
				return []string{`{"id":` + id(r) + `,"ok":false,"code":"wrong_state","error":"resume while monitoring: prepare first"` + state + `}`}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := Dial(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			h := &Handshake{Client: c, Source: ResumeArgs{Source: "file:/src"}, Dest: ResumeArgs{Source: "file:/dst"}}
			if tc.resumeSent {
				if err := h.Resume(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := h.ResumeAtSource(ctx); err != nil {
				t.Fatalf("ResumeAtSource: %v", err)
			}
			var got []string
			for _, r := range s.requests() {
				got = append(got, r.Cmd)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("requests %v, want %v", got, tc.want)
			}
		})
	}
}
