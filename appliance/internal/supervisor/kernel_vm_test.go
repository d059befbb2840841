package supervisor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/memscan/linux"
	"github.com/domainm/domainm/memscan/linux/linuxtest"
)

// TestKernelIntegrityInLiveGuest: domainm run's memory loop on a live Linux guest (TCG,
// 2 vCPUs, KASLR) runs the kernel-integrity checks every pass. The clean guest alerts
// nothing; once the test rootkit (dmkit) loads, each technique is alerted once as new
// (kernel-integrity: its system-call hook and IDT hook naming dmkit, dmkit hidden,
// the hidden task with process.pid); after a prepare and resume (the layout derived
// again) later passes alert nothing more: the findings are recognised; when dmkit undoes
// itself each is alerted gone, once.
func TestKernelIntegrityInLiveGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	g, err := linuxtest.Boot(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer g.VM.Close()

	h := newHarness(t, harnessOpts{realClock: true, interval: time.Second})
	h.stop()
	h.cfg.Target.Memory = "file:" + g.VM.RAMFile
	h.restart()
	wait := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; alerts:\n%s", what, h.alerts.dump())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	kernelAlerts := func() []alert.Event { return h.alerts.with("kernel-integrity", "") }
	wait("three passes over the clean guest", 3*time.Minute, func() bool { return h.passes() >= 3 })
	if a := kernelAlerts(); len(a) > 0 || len(h.alerts.with("memory-guest-layout-unknown", "")) > 0 {
		t.Fatalf("clean guest alerted:\n%s", h.alerts.dump())
	}

	if err := g.Infect(ctx); err != nil {
		t.Fatal(err)
	}
	checks := []string{linux.CheckSyscalls, linux.CheckIDT, linux.CheckHiddenModule, linux.CheckHiddenTask}
	wait("one kernel-integrity alert per technique", 3*time.Minute, func() bool { return len(kernelAlerts()) >= len(checks) })
	p := h.passes()
	wait("two more passes", 2*time.Minute, func() bool { return h.passes() >= p+2 })
	by := map[string]alert.Event{}
	for _, e := range kernelAlerts() {
		if _, dup := by[e.Rule.Name]; dup {
			t.Errorf("check %s alerted twice:\n%s", e.Rule.Name, h.alerts.dump())
		}
		by[e.Rule.Name] = e
	}
	for _, c := range checks {
		e, ok := by[c]
		if !ok {
			t.Errorf("no alert of check %s:\n%s", c, h.alerts.dump())
			continue
		}
		if e.DomainM.State != alert.StateNew || e.Severity() > alert.SevHigh || e.Threat == nil {
			t.Errorf("check %s: state %q severity %v threat %v", c, e.DomainM.State, e.Severity(), e.Threat)
		}
		t.Logf("%s: %s", c, e.Message)
	}
	if e := by[linux.CheckSyscalls]; !strings.Contains(e.Message, "dmkit_kill in hidden module dmkit") || e.DomainM.Meta["nr"] != "62" {
		t.Errorf("system-call alert: %s %v", e.Message, e.DomainM.Meta)
	}
	if e := by[linux.CheckHiddenTask]; e.Process == nil || e.Process.PID != g.HiddenPID || e.Process.Name != "sleep" {
		t.Errorf("hidden-task alert names process %+v, want pid %d sleep", e.Process, g.HiddenPID)
	}

	// Co-migration handshake on the same RAM file: the layout is derived again at the
	// first pass after resume, and the findings are the same ones.
	hctx := h.handshakeContext()
	c := h.dialControl(hctx)
	for _, step := range []struct {
		cmd  string
		args any
	}{{"prepare", nil}, {"resume", control.ResumeArgs{Source: "file:" + g.VM.RAMFile}}} {
		r, err := c.Do(hctx, step.cmd, step.args)
		if err != nil || !r.OK {
			t.Fatalf("%s = %+v, %v", step.cmd, r, err)
		}
	}
	p = h.passes()
	wait("three passes after resume", 3*time.Minute, func() bool { return h.passes() >= p+3 })
	if n := len(kernelAlerts()); n != len(checks) || len(h.alerts.with("kernel-integrity-gone", "")) > 0 ||
		len(h.alerts.with("kernel-changed", "")) > 0 {
		t.Errorf("after resume: %d kernel-integrity alerts (want %d), alerts:\n%s", n, len(checks), h.alerts.dump())
	}

	// dmkit undoes itself: each finding is alerted gone, under the id it was new with.
	if err := g.Undo(ctx); err != nil {
		t.Fatal(err)
	}
	wait("every finding gone", 3*time.Minute, func() bool { return len(h.alerts.with("kernel-integrity-gone", "")) >= len(checks) })
	for _, e := range h.alerts.with("kernel-integrity-gone", "") {
		if n, ok := by[e.Rule.Name]; !ok || n.DomainM.FindingID != e.DomainM.FindingID || e.DomainM.State != alert.StateGone {
			t.Errorf("gone %s (finding %s), new was %s", e.Rule.Name, e.DomainM.FindingID, n.DomainM.FindingID)
		}
	}
	p = h.passes()
	wait("two more passes", 2*time.Minute, func() bool { return h.passes() >= p+2 })
	if n := len(h.alerts.with("kernel-integrity-gone", "")); n != len(checks) || len(kernelAlerts()) != len(checks) {
		t.Errorf("after undo: %d gone alerts (want %d):\n%s", n, len(checks), h.alerts.dump())
	}
}
