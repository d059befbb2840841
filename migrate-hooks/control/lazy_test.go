package control

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestDestClient: a Handshake with a DestClient prepares through Client and resumes
// through DestClient, which connects only then (a paused destination answers nothing),
// with an epoch above the one the supervisor reports there.
func TestDestClient(t *testing.T) {
	answer := func(state string) func(r request) []string {
		return func(r request) []string {
			id := strconv.FormatUint(r.ID, 10)
			switch r.Cmd {
			case "status":
				return []string{`{"id":` + id + `,"ok":true,"state":"` + state + `","epoch":4}`}
			case "prepare":
				return []string{`{"id":` + id + `,"ok":true,"state":"quiesced"}`}
			case "resume":
				return []string{`{"id":` + id + `,"ok":true,"state":"monitoring"}`}
			}
			return nil
		}
	}
	srcPath, src := serve(t, answer("monitoring"))
	dstPath, dst := serve(t, answer("quiesced"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, srcPath)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := &Handshake{Client: c, DestClient: NewClient(dstPath)}
	defer h.DestClient.Close()
	if err := h.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(dst.requests()); n != 0 {
		t.Fatalf("destination got %d requests before resume", n)
	}
	if err := h.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	got := dst.requests()
	if len(got) != 2 || got[0].Cmd != "status" || got[1].Cmd != "resume" || got[1].Epoch != 5 {
		t.Errorf("destination saw %+v, want status then resume with epoch 5", got)
	}
	for _, r := range src.requests() {
		if r.Cmd == "resume" {
			t.Errorf("resume went to the source")
		}
	}
}
