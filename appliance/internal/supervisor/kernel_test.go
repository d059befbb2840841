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
