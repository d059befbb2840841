package supervisor

import (
	"testing"

	"github.com/domainm/domainm/memscan/linux"
)

// TestKernelTracker: a finding is new once, stays quiet while present, is gone when a
// check that ran no longer sees it, and a check that failed decides nothing.
func TestKernelTracker(t *testing.T) {
	hook := linux.Finding{Check: linux.CheckSyscalls, Key: "sys_call_table[62] -> 0xffffffffc0000000"}
	task := linux.Finding{Check: linux.CheckHiddenTask, Key: "pid 89 sleep at 0xffff888001000000"}
	res := func(sc []linux.Finding, scErr string, ht []linux.Finding) []linux.CheckResult {
		return []linux.CheckResult{{Check: linux.CheckSyscalls, Findings: sc, Err: scErr}, {Check: linux.CheckHiddenTask, Findings: ht}}
	}
	tr := &kernelTracker{known: map[string]linux.Finding{}}
	steps := []struct {
		name        string
		rs          []linux.CheckResult
		added, gone int
	}{
		{"appear", res([]linux.Finding{hook}, "", []linux.Finding{task}), 2, 0},
		{"still there", res([]linux.Finding{hook}, "", []linux.Finding{task}), 0, 0},
		{"syscall check failed", res(nil, "reading sys_call_table: not mapped", []linux.Finding{task}), 0, 0},
		{"hook removed", res(nil, "", []linux.Finding{task}), 0, 1},
		{"task unhidden", res(nil, "", nil), 0, 1},
		{"hook again", res([]linux.Finding{hook}, "", nil), 1, 0},
	}
	for _, s := range steps {
		a, g := tr.update(s.rs)
		if len(a) != s.added || len(g) != s.gone {
			t.Errorf("%s: %d new, %d gone; want %d, %d", s.name, len(a), len(g), s.added, s.gone)
		}
	}
}

// TestKernelViewSeen: a layout derived again (resume) is compared with the one before:
// the same kernel at the same place is no change; another release or another KASLR
// placement is.
func TestKernelViewSeen(t *testing.T) {
	in := func(rel string, text uint64) *linux.Inspector {
		return &linux.Inspector{K: &linux.Kernel{Release: rel, TextVA: text}}
	}
	var v kernelView
	first := in("6.1.0-57-amd64", 0xffffffffb0600000)
	for _, c := range []struct {
		name    string
		in      *linux.Inspector
		changed bool
	}{
		{"first", first, false},
		{"same layout", first, false},
		{"derived again, same kernel", in("6.1.0-57-amd64", 0xffffffffb0600000), false},
		{"rebooted: KASLR elsewhere", in("6.1.0-57-amd64", 0xffffffff9a200000), true},
		{"another release", in("6.1.0-58-amd64", 0xffffffff9a200000), true},
	} {
		if got := v.seen(c.in); (got != "") != c.changed {
			t.Errorf("%s: %q", c.name, got)
		}
	}
}
