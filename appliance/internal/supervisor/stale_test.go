package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	coord "github.com/domainm/domainm/migrate-hooks/control"
)

// A prepare or resume whose epoch is below one the supervisor accepted already comes
// from a connection the coordinator abandoned: it is refused as stale and changes
// nothing, and status reports the epoch (issue 8, item 8).
func TestStaleEpochRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := h.handshakeContext()
	c := h.dialControl(ctx)
	do := func(cmd string, epoch uint64, args any) control.Response {
		t.Helper()
		c.Epoch = epoch
		r, err := c.Do(ctx, cmd, args)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	dst, _ := h.ramCopy("ram-dst")

	if r := do("prepare", 5, nil); !r.OK || r.State != control.StateQuiesced {
		t.Fatalf("prepare epoch 5 = %+v", r)
	}
	if r := do("status", 0, nil); r.Epoch != 5 {
		t.Errorf("status epoch %d, want 5", r.Epoch)
	}
	if r := do("resume", 4, control.ResumeArgs{Source: "file:" + dst}); r.OK || r.Code != control.CodeStale || r.State != control.StateQuiesced {
		t.Errorf("resume with epoch 4 after 5 = %+v, want refused stale, still quiesced", r)
	}
	if r := do("status", 0, nil); r.State != control.StateQuiesced || r.Source == "file:"+dst {
		t.Errorf("after the stale resume: %+v", r)
	}
	if r := do("resume", 6, control.ResumeArgs{Source: "file:" + dst}); !r.OK || r.State != control.StateMonitoring {
		t.Fatalf("resume epoch 6 = %+v", r)
	}
	if r := do("prepare", 5, nil); r.OK || r.Code != control.CodeStale || r.State != control.StateMonitoring {
		t.Errorf("prepare with epoch 5 after 6 = %+v, want refused stale, still monitoring", r)
	}
	h.stop()
	recs := h.stateLog()
	var states []string
	for _, rec := range recs {
		states = append(states, rec.State)
	}
	want := "starting monitoring quiescing quiesced resuming monitoring stopping stopped"
	if got := fmtStates(states); got != want {
		t.Errorf("states %s, want %s (refused requests change nothing)", got, want)
	}
}

func fmtStates(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

// A prepare that waits for the blocks in flight longer than the coordinator waits
// (timeout_ms) is answered "expired" when its time is up, and when the blocks finish
// the supervisor does not quiesce after all: it keeps monitoring (issue 8, item 8).
func TestPrepareExpiresWhileBlocksFinish(t *testing.T) {
	var g *gateSource
	open := gatedOpen(&g, 64<<10, nil)
	h := newHarness(t, harnessOpts{open: open, blockSize: 64 << 10})
	h.waitFor("first pass", func() bool { return h.passes() >= 1 })
	g.shut()
	h.clk.Advance(h.cfg.Memory.Interval)
	h.waitFor("pass 2 to start", func() bool { return g.ranges.Load() == 2 })

	conn, err := net.Dial("unix", h.cfg.Control.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	io.WriteString(conn, `{"id":1,"cmd":"prepare","epoch":1,"timeout_ms":300}`+"\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to prepare while its blocks wait: %v", err)
	}
	var r control.Response
	json.Unmarshal([]byte(line), &r)
	if r.OK || r.Code != control.CodeExpired {
		t.Errorf("prepare = %s, want refused %s", line, control.CodeExpired)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("answered after %v, want about its 300 ms", d)
	}
	g.open() // the blocks in flight finish; the abandoned prepare must not quiesce now
	h.tick() // the interrupted pass continues from its cursor and completes
	if st := h.sup.Status(context.Background()).State; st != control.StateMonitoring {
		t.Errorf("state %s after the abandoned prepare, want monitoring", st)
	}
	h.stop()
	recs := h.stateLog()
	for _, rec := range recs {
		if rec.State == control.StateQuiescing || rec.State == control.StateQuiesced {
			t.Errorf("state log: %s (%s) after a prepare the coordinator gave up on", rec.State, rec.Reason)
		}
	}
}

// A resume to the destination that the supervisor carried out but whose answer the
// coordinator never got (it timed out on the way back) must not leave the supervisor
// at the destination when the coordinator rolls back: the handshake's resume at the
// source is refused as wrong_state, so it prepares again and resumes at the source
// (issue 8, item 8).
func TestResumeAtSourceAfterLostAnswer(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := h.handshakeContext()
	c := h.dialCoordinator(ctx)
	dst, _ := h.ramCopy("ram-dst")
	hs := &coord.Handshake{Client: c,
		Source: coord.ResumeArgs{Source: "file:" + h.ram, Layout: "flat", Target: coord.Target{Name: "t1", Host: "src"}},
		Dest:   coord.ResumeArgs{Source: "file:" + dst, Layout: "flat", Target: coord.Target{Name: "t1", Host: "dst"}}}
	if err := hs.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hs.Resume(ctx); err != nil { // carried out; say its answer was lost
		t.Fatal(err)
	}
	if err := hs.ResumeAtSource(ctx); err != nil {
		t.Fatalf("resume at the source after a lost answer: %v", err)
	}
	st := h.sup.Status(ctx)
	if st.State != control.StateMonitoring || st.Source != "file:"+h.ram || st.Target.Host != "src" {
		t.Errorf("status %+v, want monitoring file:%s on src", st, h.ram)
	}
}
