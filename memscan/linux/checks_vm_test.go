package linux

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// attribMarker is what the guest's marker process holds in a shell variable.
func attribMarker(pid int) string { return fmt.Sprintf("DOMAINM-ATTRIB-MARKER-%d-0123456789", pid) }

// TestAttribution: a string held by one guest process is attributed, through the
// reverse map built from the processes' page tables, to that pid at a virtual address
// whose page the guest's own /proc/PID/pagemap puts at the same physical frame.
func TestAttribution(t *testing.T) {
	g := bootGuest(t)
	snap, err := (&Guest{In: g.inspector(t)}).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot: %d user processes, %d module regions in %v", len(snap.Tasks), len(snap.Modules), snap.Took)
	marker := []byte(attribMarker(g.attribPID))
	var hits []uint64
	for _, r := range g.src.Ranges() {
		buf := make([]byte, 1<<20)
		for off := uint64(0); off < r.Size; off += uint64(len(buf)) {
			n, _ := g.src.ReadAt(buf[:min(uint64(len(buf)), r.Size-off)], int64(r.GPA+off))
			for i, b := 0, buf[:n]; ; {
				j := bytes.Index(b[i:], marker)
				if j < 0 {
					break
				}
				hits = append(hits, r.GPA+off+uint64(i+j))
				i += j + 1
			}
		}
	}
	if len(hits) == 0 {
		t.Fatalf("marker %q not in guest memory", marker)
	}
	t0 := time.Now()
	attr, st, err := snap.Attribute(hits)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("attributed %d addresses through %d processes' page tables (%d tables) in %v", len(hits), st.Processes, st.Tables, time.Since(t0))
	attributed := 0
	for _, pa := range hits {
		a := attr[pa]
		t.Logf("marker at %#x: %+v kernel %+v", pa, a.Processes, a.Kernel)
		for _, m := range a.Processes {
			if m.PID != g.attribPID {
				continue
			}
			if a.Kernel != nil {
				t.Errorf("marker at %#x in pid %d attributed to the kernel too: %+v", pa, m.PID, a.Kernel)
			}
			e, ok := g.pagemap[m.VA&^0xfff]
			if !ok {
				t.Errorf("pid %d va %#x: not in the guest's heap or stack pagemap", m.PID, m.VA)
				continue
			}
			if pfn := e & (1<<55 - 1); e>>63 == 0 || pfn != pa>>12 {
				t.Errorf("pid %d va %#x at %#x; guest's pagemap entry %#x (pfn %#x)", m.PID, m.VA, pa, e, pfn)
				continue
			}
			attributed++
		}
	}
	if attributed == 0 {
		t.Errorf("marker found at %#x but never attributed to pid %d", hits, g.attribPID)
	}
}

// TestSyscallTable: on the clean guest every entry of sys_call_table, all of them,
// points at the start of a __x64_sys_* function in kernel text.
func TestSyscallTable(t *testing.T) {
	g := bootGuest(t)
	in := g.inspector(t)
	mods, err := in.Modules()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := in.SyscallTable(mods)
	if err != nil {
		t.Fatal(err)
	}
	if len(sc) < 400 {
		t.Errorf("%d system calls", len(sc))
	}
	for _, e := range sc {
		if e.Suspicious() || e.Module != "" || !strings.HasPrefix(e.Symbol, "__x64_sys_") || strings.Contains(e.Symbol, "+") {
			t.Errorf("entry %d -> %#x %s (module %q, in text %v)", e.NR, e.Target, e.Symbol, e.Module, e.InText)
		}
	}
	t.Logf("%d entries, first %s, last %s", len(sc), sc[0].Symbol, sc[len(sc)-1].Symbol)
}
