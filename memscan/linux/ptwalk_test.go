package linux

import (
	"fmt"
	"strings"
	"testing"
)

// userSpace builds a process's page tables in 16 MiB of RAM: 0x400000 -> frame 0x100000,
// 0x401000 -> 0x300000 (virtually adjacent, physically not), a 2 MiB page at
// 0x40000000 -> 0x600000, a table pointer outside RAM, and in the kernel half a
// directory whose 512 entries all point at one table, and so on down: 512*512 tables
// to read, which the limit must stop.
func userSpace(t testing.TB) (*Kernel, *memSource) {
	t.Helper()
	m := &memSource{b: make([]byte, 16<<20)}
	const pml4, pdpt, pd, pt = 0x1000, 0x2000, 0x3000, 0x4000
	m.put64(pml4+0, pdpt|7)
	m.put64(pdpt+0, pd|7)
	m.put64(pd+8*2, pt|7)           // 0x400000
	m.put64(pt+0, 0x100000|7)       // 0x400000
	m.put64(pt+8, 0x300000|7)       // 0x401000
	m.put64(pdpt+8, 0x5000|7)       // 0x40000000
	m.put64(0x5000, 0x600000|0x87)  // 2 MiB page
	m.put64(pdpt+8*2, 0x7ff00000|7) // a table outside RAM: skipped
	m.put64(pml4+8*256, 0x6000|7)   // kernel half
	for i := range uint64(512) {
		m.put64(0x6000+8*i, 0x7000|7)
		m.put64(0x7000+8*i, pt|7)
	}
	p := newPhys(m)
	return &Kernel{p: p, Levels: 4, as: &AddressSpace{p: p, Root: pml4, Levels: 4}}, m
}

func TestPTWalker(t *testing.T) {
	k, _ := userSpace(t)
	w := newPTWalker(k.p, 4, 100)
	var got []string
	err := w.walk(0x1000, 0, userTop(4), func(va, pa, size uint64) {
		got = append(got, fmt.Sprintf("%#x %#x %#x", va, pa, size))
	})
	want := []string{"0x400000 0x100000 0x1000", "0x401000 0x300000 0x1000", "0x40000000 0x600000 0x200000"}
	if err != nil || strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("user half: %v, %v; want %v", got, err, want)
	}
	if w.Skipped != 1 {
		t.Errorf("skipped %d tables outside RAM, want 1", w.Skipped)
	}
	// A sub-range sees only its leaves.
	got = nil
	w.walk(0x1000, 0x401000, 0x402000, func(va, pa, size uint64) { got = append(got, fmt.Sprintf("%#x", va)) })
	if strings.Join(got, ";") != "0x401000" {
		t.Errorf("sub-range: %v", got)
	}
	// The kernel half's fan-out: the table limit ends the walk with an error.
	w = newPTWalker(k.p, 4, 100)
	err = w.walk(0x1000, 0xffff800000000000, ^uint64(0), func(va, pa, size uint64) {})
	if err == nil || !strings.Contains(err.Error(), "more than 100 page tables") {
		t.Errorf("looping tables: %v", err)
	}
}

func TestAttributeSynthetic(t *testing.T) {
	k, _ := userSpace(t)
	k.PageOffset = 0xffff888000000000
	s := &Snapshot{g: &Guest{In: &Inspector{K: k}}, Tasks: []Task{{PID: 42, Comm: "victim", PGD: 0x1000}, {PID: 7, Comm: "twin", PGD: 0x1000}},
		modPages: map[uint64]kernelPage{0xa00000: {module: "rk", va: 0xffffffffc0002000}}}
	attr, st, err := s.Attribute([]uint64{0x300010, 0x600000 + 0x1234, 0xa00008, 0xbf0000})
	if err != nil {
		t.Fatal(err)
	}
	if st.Processes != 2 {
		t.Errorf("stats %+v", st)
	}
	a := attr[0x300010]
	if len(a.Processes) != 2 || a.Processes[0] != (UserMapping{PID: 7, Comm: "twin", VA: 0x401010}) || a.Processes[1].PID != 42 || a.Kernel != nil {
		t.Errorf("0x300010: %+v %+v", a.Processes, a.Kernel)
	}
	if a := attr[0x601234]; len(a.Processes) != 2 || a.Processes[0].VA != 0x40001234 {
		t.Errorf("inside a 2 MiB page: %+v", a.Processes)
	}
	if a := attr[0xa00008]; len(a.Processes) != 0 || a.Kernel == nil || a.Kernel.Kind != KernelModule || a.Kernel.Module != "rk" || a.Kernel.VA != 0xffffffffc0002008 {
		t.Errorf("module page: %+v %+v", a.Processes, a.Kernel)
	}
	if a := attr[0xbf0000]; len(a.Processes) != 0 || a.Kernel == nil || a.Kernel.Kind != KernelDirectMap || a.Kernel.VA != 0xffff888000bf0000 {
		t.Errorf("unmapped page: %+v %+v", a.Processes, a.Kernel)
	}
}
