package alert

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/detectors/yara"
)

var holdersTime = time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)

// TestAttributedMatches: a memory match held by several processes names them all, per
// match, in domainm.matches[].processes; process.* is the first of the lowest-addressed
// match; the message says who holds it; a kernel match names the module.
func TestAttributedMatches(t *testing.T) {
	procs := []detectors.ProcessMapping{{PID: 7, Name: "sh", Address: 0x55550010}, {PID: 9, Name: "sh", Address: 0x55560010}, {PID: 12, Name: "bash", Address: 0x7f0010}}
	ms := []detectors.Match{{Rule: "r", Namespace: "n", Strings: []detectors.StringMatch{
		{Name: "$a", Offset: 0x3000010, Length: 4, Processes: procs, ProcessCount: 3},
		{Name: "$a", Offset: 0x5000020, Length: 4, Kernel: &detectors.KernelMapping{Kind: "module", Module: "rootkit", Address: 0xffffffffc0001020}},
	}}}
	fs := yara.MemoryFindings(ms, detectors.Target{Name: "vm"}, holdersTime)
	if p := fs[0].Process; p == nil || p.PID != 7 || p.Address != 0x55550010 {
		t.Fatalf("finding process %+v", p)
	}
	e := FromFinding(fs[0], StateNew)
	if e.Process == nil || e.Process.PID != 7 || e.Process.Name != "sh" {
		t.Errorf("process.* = %+v", e.Process)
	}
	if want := "at 0x3000010 (pid 7 sh at 0x55550010, and 2 more processes) on vm"; !strings.Contains(e.Message, want) {
		t.Errorf("message %q lacks %q", e.Message, want)
	}
	b, _ := json.Marshal(e)
	var back struct {
		DomainM struct {
			Matches []Match `json:"matches"`
		} `json:"domainm"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	m := back.DomainM.Matches
	if len(m) != 2 || len(m[0].Processes) != 3 || m[0].ProcessCount != 3 || m[0].Processes[2].PID != 12 || m[0].Processes[2].Address != "0x7f0010" {
		t.Errorf("matches %+v", m)
	}
	if k := m[1].Kernel; k == nil || k.Kind != "module" || k.Module != "rootkit" || k.Address != "0xffffffffc0001020" || len(m[1].Processes) != 0 {
		t.Errorf("kernel match %+v", m[1])
	}
	// Many processes: the event lists a bounded number and counts them all.
	var many []detectors.ProcessMapping
	for i := range 40 {
		many = append(many, detectors.ProcessMapping{PID: 100 + i, Name: "w", Address: 0x1000})
	}
	u := Updated(fs[0], holdersTime, []detectors.StringMatch{{Name: "$a", Offset: 0x10, Length: 4, Processes: many[:detectors.MaxMatchProcesses], ProcessCount: 40}})
	if len(u.DomainM.Matches[0].Processes) != maxMatchProcesses || u.DomainM.Matches[0].ProcessCount != 40 || !strings.Contains(u.Message, "and 39 more processes") {
		t.Errorf("updated: %d processes listed, count %d, message %q", len(u.DomainM.Matches[0].Processes), u.DomainM.Matches[0].ProcessCount, u.Message)
	}
	k := FromFinding(yara.MemoryFindings([]detectors.Match{{Rule: "r", Strings: ms[0].Strings[1:]}}, detectors.Target{}, holdersTime)[0], StateNew)
	if !strings.Contains(k.Message, "(kernel module rootkit at 0xffffffffc0001020)") || k.Process != nil {
		t.Errorf("kernel match: message %q, process %+v", k.Message, k.Process)
	}
}
