package linux

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan"
	"github.com/domainm/domainm/memscan/vmtest"
)

// findOnce runs Find on the booted guest once and caches it (the layout tests share it).
func (g *guest) kernel(t *testing.T) *Kernel {
	t.Helper()
	if g.k == nil {
		k, err := Find(g.src)
		if err != nil {
			t.Fatalf("Find: %v", err)
		}
		t.Logf("layout derived cold in %v: %s; _text %#x at %#x; KASLR virtual shift %#x, physical shift %#x; %d-level, root %#x; %d symbols",
			k.Took, k.Release, k.TextVA, k.TextPA, k.VirtShift, k.PhysShift, k.Levels, k.PGD, len(k.Syms.Symbols))
		g.k = k
	}
	return g.k
}

// qemuTranslate asks QEMU to translate va with the stopped vCPU's paging (HMP gva2gpa).
func qemuTranslate(t *testing.T, vm *vmtest.VM, va uint64) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := vm.HMP(ctx, fmt.Sprintf("gva2gpa %#x", va))
	if err != nil {
		t.Fatalf("gva2gpa %#x: %v", va, err)
	}
	pa, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(out), "gpa: "), 0, 64)
	if err != nil {
		t.Fatalf("gva2gpa %#x: %q", va, out)
	}
	return pa
}

// TestLayout derives the kernel's layout from the guest's RAM alone and checks it
// against the guest's own /proc/kallsyms and QEMU's own address translation.
func TestLayout(t *testing.T) {
	g := bootGuest(t)
	k := g.kernel(t)
	kernel, _ := vmtest.Kernel()
	if want := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-"); k.Release != want {
		t.Errorf("release %q, want %q (banner %q)", k.Release, want, k.Banner)
	}
	if !strings.HasPrefix(k.Banner, "Linux version "+k.Release+" ") {
		t.Errorf("banner %q", k.Banner)
	}
	if want := g.sym(t, "_text"); k.TextVA != want {
		t.Errorf("_text %#x, guest says %#x", k.TextVA, want)
	}
	if want := int64(g.sym(t, "_text") - 0xffffffff81000000); k.VirtShift != want {
		t.Errorf("virtual shift %#x, want %#x", k.VirtShift, want)
	}
	if k.VirtShift == 0 && k.PhysShift == 0 {
		t.Errorf("no KASLR shift: is KASLR on in the guest?")
	}
	if k.Levels != 4 {
		t.Errorf("%d-level paging; the TCG CPU has no LA57", k.Levels)
	}
	// QEMU's translation with the vCPU's CR3 (which maps the kernel like init_top_pgt).
	for _, name := range []string{"_text", "linux_banner", "init_top_pgt", "schedule", "jiffies_64", "init_task", "sys_call_table", "__start_BTF"} {
		va := g.sym(t, name)
		m, err := k.Translate(va)
		if err != nil {
			t.Errorf("%s %#x: %v", name, va, err)
			continue
		}
		if want := qemuTranslate(t, g.vm, va); m.PA != want {
			t.Errorf("%s %#x -> %#x, QEMU says %#x", name, va, m.PA, want)
		}
	}
	if want := qemuTranslate(t, g.vm, k.TextVA); k.TextPA != want || k.PhysShift != int64(want-0x1000000) {
		t.Errorf("_text at %#x (physical shift %#x), QEMU says %#x", k.TextPA, k.PhysShift, want)
	}
	// The banner's bytes through the page walk.
	b := make([]byte, 64)
	if err := k.Read(g.sym(t, "linux_banner"), b); err != nil || !strings.HasPrefix(string(b), "Linux version "+k.Release) {
		t.Errorf("linux_banner reads %q, %v", b, err)
	}
	// The direct map (page_offset_base, randomised): PAGE_OFFSET + pa -> pa, 2 MiB or 1 GiB pages.
	if k.PageOffset == 0 {
		t.Fatal("no page_offset_base")
	}
	for _, pa := range []uint64{0x1000, 0x1234567, k.TextPA + 0x12345, 0xc000000} {
		m, err := k.Translate(k.PageOffset + pa)
		if err != nil || m.PA != pa {
			t.Errorf("direct map %#x+%#x -> %+v, %v", k.PageOffset, pa, m, err)
		}
		if want := qemuTranslate(t, g.vm, k.PageOffset+pa); want != pa {
			t.Errorf("QEMU: direct map %#x -> %#x", k.PageOffset+pa, want)
		}
		t.Logf("direct map %#x: %d KiB page", k.PageOffset+pa, m.PageSize>>10)
	}
	if fx := os.Getenv("DOMAINM_LINUX_FIXTURE"); fx != "" {
		t.Logf("fixture in %s", fx)
	}
}

// TestKallsyms: every core-kernel symbol the guest's /proc/kallsyms lists, in its order,
// with the same name, type and address.
func TestKallsyms(t *testing.T) {
	g := bootGuest(t)
	k := g.kernel(t)
	var want []kallsymLine
	for _, l := range g.kallsym {
		if l.mod == "" {
			want = append(want, l)
		}
	}
	got := k.Syms.Symbols
	if len(got) != len(want) {
		t.Errorf("%d symbols, the guest lists %d core-kernel symbols", len(got), len(want))
	}
	bad := 0
	for i := range min(len(got), len(want)) {
		w := want[i]
		if got[i].Name != w.name || got[i].Type != w.typ || got[i].Addr != w.addr {
			if bad++; bad <= 10 {
				t.Errorf("symbol %d: %016x %c %s, guest: %016x %c %s", i, got[i].Addr, got[i].Type, got[i].Name, w.addr, w.typ, w.name)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d symbols differ", bad, len(want))
	}
	t.Logf("%d symbols equal to the guest's /proc/kallsyms", len(want)-bad)
}

// TestLayoutELFCore: the same layout from an ELF core of the same stopped guest
// (dump-guest-memory, the offline path), through the elf: source.
func TestLayoutELFCore(t *testing.T) {
	g := bootGuest(t)
	k := g.kernel(t)
	core := filepath.Join(t.TempDir(), "core")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := g.vm.DumpGuestMemory(ctx, core); err != nil {
		t.Fatal(err)
	}
	src, err := memscan.Open("elf:"+core, memscan.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	k2, err := Find(src)
	if err != nil {
		t.Fatal(err)
	}
	if k2.TextVA != k.TextVA || k2.TextPA != k.TextPA || k2.PGD != k.PGD || k2.Release != k.Release || len(k2.Syms.Symbols) != len(k.Syms.Symbols) {
		t.Errorf("ELF core: _text %#x at %#x, root %#x, %s, %d symbols; RAM file: _text %#x at %#x, root %#x, %s, %d symbols",
			k2.TextVA, k2.TextPA, k2.PGD, k2.Release, len(k2.Syms.Symbols), k.TextVA, k.TextPA, k.PGD, k.Release, len(k.Syms.Symbols))
	}
	t.Logf("layout from the ELF core in %v", k2.Took)
}
