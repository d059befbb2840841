package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// serve answers each request with what answer returns (nil: no answer).
func serve(t *testing.T, answer func(id json.RawMessage, cmd string) []string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var req struct {
				ID  json.RawMessage `json:"id"`
				Cmd string          `json:"cmd"`
			}
			json.Unmarshal(sc.Bytes(), &req)
			for _, line := range answer(req.ID, req.Cmd) {
				c.Write([]byte(line + "\n"))
			}
		}
	}()
	return path
}

func TestCallMatchesIDsAndTypesRefusals(t *testing.T) {
	slow := true
	path := serve(t, func(id json.RawMessage, cmd string) []string {
		switch cmd {
		case "prepare":
			if slow { // the first prepare is answered only after the next request
				slow = false
				return nil
			}
			return []string{`{"id":1,"ok":true,"state":"quiesced"}`, `{"id":` + string(id) + `,"ok":true,"state":"quiesced"}`}
		case "resume":
			return []string{`{"id":` + string(id) + `,"ok":false,"error":"sampled pages differ","code":"guest_changed"}`}
		}
		return []string{`{"id":` + string(id) + `,"ok":true,"state":"monitoring"}`}
	})
	ctx := context.Background()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.Prepare(tctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered prepare: %v, want deadline exceeded", err)
	}
	// The late answer to call 1 arrives first and must be skipped.
	r, err := c.Prepare(ctx)
	if err != nil || r.ID != 2 || r.State != StateQuiesced {
		t.Fatalf("second prepare: %+v, %v", r, err)
	}
	_, err = c.Resume(ctx, ResumeArgs{Source: "file:/x", Layout: "flat"})
	var re *RemoteError
	if !errors.As(err, &re) || !errors.Is(err, ErrGuestChanged) || re.Code != "guest_changed" {
		t.Fatalf("refused resume: %#v, want a RemoteError matching ErrGuestChanged", err)
	}
	if st, err := c.Status(ctx); err != nil || st != StateMonitoring {
		t.Fatalf("status %q, %v", st, err)
	}
}
