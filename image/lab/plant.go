package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// plantBefore plants the first string in a target process and the setuid binary on
// its disk, at the source.
func (l *Loop) plantBefore(ctx context.Context) error {
	vm := l.srcVMs[0]
	if err := l.waitFor(ctx, 5*time.Minute, "the target ready", func() (bool, string) {
		b, _ := os.ReadFile(vm.Serial)
		return strings.Contains(string(b), "GUEST-TARGET-READY /dev/"), consoleTail(vm.Serial)
	}); err != nil {
		return err
	}
	l.rep.Implants[0] = implant()
	if err := l.tell(ctx, l.src, l.srcVMs[0], "plant "+l.rep.Implants[0], "GUEST-PLANTED"); err != nil {
		return err
	}
	return l.tell(ctx, l.src, l.srcVMs[0], "setuid "+SetuidPath, "GUEST-SETUID")
}

// tell sends a command to the target on h and waits for its answer on the console
// (the console of the QEMU that runs it on h).
func (l *Loop) tell(ctx context.Context, h *Host, vm *VM, line, answer string) error {
	want := answer + " "
	before := count(vm.Serial, want)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err := Tell(ctx, labSock(h), line, func() bool { return count(vm.Serial, want) > before })
	if err != nil {
		return fmt.Errorf("%w%s", err, consoleTail(vm.Serial))
	}
	return nil
}

func count(path, s string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), s)
}

// waitFirstAlerts waits for both alerts at rsyslogd.
func (l *Loop) waitFirstAlerts(ctx context.Context) error {
	if err := l.waitAlert(ctx, "memory-match", "", l.rep.Implants[0]); err != nil {
		return err
	}
	return l.waitAlert(ctx, "file-added", SetuidPath, "")
}

// waitAlert waits until rsyslogd received an alert with the action (and file path, and
// text in its raw form, where not ""), carrying the target's name and uuid.
func (l *Loop) waitAlert(ctx context.Context, action, path, text string) error {
	what := fmt.Sprintf("%s alert %s%s at rsyslogd", action, path, text)
	return l.waitFor(ctx, 5*time.Minute, what, func() (bool, string) {
		for _, a := range l.syslog.Received() {
			if a.Event.Action == action && (path == "" || a.File.Path == path) && strings.Contains(a.Raw, text) {
				if a.Host.Name != TargetName || a.Host.ID != TargetUUID {
					return false, fmt.Sprintf("alert without the target's identity: %s", a.Raw)
				}
				fmt.Fprintf(l.o.Out, "           rsyslogd: %s %s%s (host.name %s, host.id %s)\n", action, path, text, a.Host.Name, a.Host.ID)
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d alerts received;", len(l.syslog.Received())) + consoleTail(l.dommNow().Serial)
	})
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o644) }

// received says whether rsyslogd has an alert with the action (and file path, and text
// in its raw form, where not "").
func (l *Loop) received(action, path, text string) bool {
	for _, a := range l.syslog.Received() {
		if a.Event.Action == action && (path == "" || a.File.Path == path) && strings.Contains(a.Raw, text) {
			return true
		}
	}
	return false
}

// dommNow is the Domain M VM that runs: the destination's once the co-migration ended.
func (l *Loop) dommNow() *VM {
	if l.rep.Migration.Total != nil && l.dstVMs[1] != nil {
		return l.dstVMs[1]
	}
	return l.srcVMs[1]
}
