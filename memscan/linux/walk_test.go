package linux

import (
	"strings"
	"testing"
)

// identityKernel maps virtual 0xffffffff80000000 onto physical 0 with one 1 GiB page,
// over 2 MiB of RAM.
func identityKernel(t *testing.T) (*Kernel, *memSource) {
	t.Helper()
	m := &memSource{b: make([]byte, 2<<20)}
	const pml4, pdpt = 0x1000, 0x2000
	m.put64(pml4+8*511, pdpt|3)
	m.put64(pdpt+8*510, 0|0x83)
	p := newPhys(m)
	return &Kernel{p: p, as: &AddressSpace{p: p, Root: pml4, Levels: 4}}, m
}

func TestWalkListHostile(t *testing.T) {
	k, m := identityKernel(t)
	in := &Inspector{K: k}
	const va = 0xffffffff80000000
	head, a, b := uint64(0x10000), uint64(0x10100), uint64(0x10200)
	count := func() (int, error) {
		n := 0
		err := in.walkList("test", va+head, 100, func(uint64) error { n++; return nil })
		return n, err
	}
	// head -> a -> b -> head
	m.put64(head, va+a)
	m.put64(a, va+b)
	m.put64(b, va+head)
	if n, err := count(); n != 2 || err != nil {
		t.Errorf("good list: %d entries, %v", n, err)
	}
	// b -> a: a loop that never returns to head
	m.put64(b, va+a)
	if _, err := count(); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("loop: %v", err)
	}
	// b -> a pointer outside RAM
	m.put64(b, va+0x3000000)
	if _, err := count(); err == nil || !strings.Contains(err.Error(), "outside RAM") {
		t.Errorf("pointer outside RAM: %v", err)
	}
	// b -> unmapped
	m.put64(b, 0xffff800000000000)
	if _, err := count(); err == nil {
		t.Errorf("unmapped pointer accepted")
	}
	// a long chain: the limit stops it
	for i := uint64(0); i < 200; i++ {
		m.put64(head+0x100*i, va+head+0x100*(i+1))
	}
	if _, err := count(); err == nil || !strings.Contains(err.Error(), "more than 100") {
		t.Errorf("long list: %v", err)
	}
}
