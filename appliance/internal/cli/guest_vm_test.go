package cli

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan/linux/linuxtest"
	"github.com/domainm/domainm/memscan/vmtest"
)

// heapGuest is a booted Linux guest (the host's Debian kernel under TCG, KASLR on, 2
// vCPUs, a few hundred processes) holding heapmark's markers, and its own view of them.
type heapGuest struct {
	vm   *vmtest.VM
	pid  int    // heapmark's pid
	tag  string // the markers' tag
	a, b uint64 // virtual addresses of marker A (inside a page) and B (across a boundary)
	aLen int
	bLen int
	// vmark's marker across a page boundary of its module memory: virtual address,
	// length and the two frames (from the module itself: vmalloc_to_pfn).
	k            uint64
	kLen         int
	kPFN0, kPFN1 uint64
	kIn          string            // "module" (its own memory) or "vmalloc" (pages it mapped there)
	pagemap      map[uint64]uint64 // heapmark's heap, from the guest's /proc/PID/pagemap: page VA -> entry
	banner       uint64            // linux_banner's virtual address, from the guest's /proc/kallsyms
	modules      map[string][2]uint64
	ps           string // the guest's own ps
	bootTook     time.Duration
}

// heapGuestProcs is how many idle processes the guest starts besides its own.
const heapGuestProcs = 300

// heapScript loads nbd (for a module's string), starts heapGuestProcs sleeps and
// heapmark (which leaves free memory fragmented, unmovable memory too), loads vmark (a
// marker across a page boundary of its own module memory), then prints heapmark's report, linux_banner's
// address, /proc/modules, ps and heapmark's heap pagemap between markers, and idles.
const heapScript = `insmod /mods/nbd.ko || echo INSMOD-FAILED
mount -t tmpfs tmpfs /tmp
i=0; while [ $i -lt $NPROC ]; do sleep 100000 & i=$((i+1)); done
/heapmark $TAG > /tmp/heapmark.out &
HP=$!
while ! grep -q HEAPMARK /tmp/heapmark.out; do sleep 1; done
cat /tmp/heapmark.out
insmod /mods/vmark.ko tag=$TAG || echo INSMOD-FAILED
dmesg | grep VMARK
echo "BANNER $(grep ' linux_banner$' /proc/kallsyms)"
echo MODULES-BEGIN; cat /proc/modules; echo MODULES-END
echo PS-BEGIN; ps; echo PS-END
echo PAGEMAP-BEGIN
while read range perms off dev ino name; do
  if [ "$name" = "[heap]" ]; then
    a=$((0x${range%-*})); e=$((0x${range#*-}))
    while [ $a -lt $e ]; do
      echo "PM $a $(dd if=/proc/$HP/pagemap bs=8 skip=$((a/4096)) count=1 2>/dev/null | od -An -tx8)"
      a=$((a+4096))
    done
  fi
done < /proc/$HP/maps
echo PAGEMAP-END
echo GUEST-READY
while true; do sleep 1000; done`

// bootHeapGuest builds heapmark (gcc -static), boots the guest and parses its view. The
// VM is stopped (paused) once the guest printed it, so that its memory stays as shown.
func bootHeapGuest(t *testing.T, tag string) *heapGuest {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a TCG guest (-short)")
	}
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	dir := t.TempDir()
	hm := filepath.Join(dir, "heapmark")
	if err := linuxtest.BuildStatic("testdata/heapmark.c", hm); err != nil {
		t.Fatal(err)
	}
	// vmark, the test module, built against the kernel's linux-headers with the
	// kernel-integrity tests' helper.
	bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer bcancel()
	ko, err := linuxtest.BuildVMark(bctx, rel, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for guest, host := range map[string]string{"heapmark": hm, "mods/vmark.ko": ko, "mods/nbd.ko": filepath.Join("/lib/modules", rel, "kernel/drivers/block/nbd.ko")} {
		b, err := os.ReadFile(host)
		if err != nil {
			t.Fatal(err)
		}
		files[guest] = b
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	script := fmt.Sprintf("NPROC=%d\nTAG=%s\n%s", heapGuestProcs, tag, heapScript)
	if err := vmtest.BuildInitramfs(initrd, script, files); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	// no_timer_check: under load the TCG guest can fail the IO-APIC timer check and panic.
	vm := vmtest.Start(t, vmtest.Config{Memory: 384 << 20, Kernel: kernel, Initrd: initrd, Accel: "tcg",
		Append: "quiet panic=-1 no_timer_check", Extra: []string{"-smp", "2"}, Timeout: 2 * time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := vm.WaitSerial(ctx, "GUEST-READY"); err != nil {
		t.Fatalf("guest did not come up: %v\n%s", err, vm.Serial())
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	g := &heapGuest{vm: vm, tag: tag, bootTook: time.Since(t0), pagemap: map[uint64]uint64{}, modules: map[string][2]uint64{}}
	if err := g.parse(vm.Serial()); err != nil {
		t.Fatalf("%v\n%s", err, vm.Serial())
	}
	t.Logf("guest up in %v: heapmark pid %d, marker A at %#x, B at %#x; %d heap pages in its pagemap",
		g.bootTook.Round(time.Second), g.pid, g.a, g.b, len(g.pagemap))
	return g
}

func (g *heapGuest) parse(serial string) error {
	if strings.Contains(serial, "INSMOD-FAILED") || strings.Contains(serial, "HEAPMARK-FAILED") {
		return fmt.Errorf("guest setup failed")
	}
	m := regexp.MustCompile(`HEAPMARK pid=(\d+) a=0x([0-9a-f]+) alen=(\d+) b=0x([0-9a-f]+) blen=(\d+)`).FindStringSubmatch(serial)
	if m == nil {
		return fmt.Errorf("no HEAPMARK line on the console")
	}
	g.pid, _ = strconv.Atoi(m[1])
	g.a, _ = strconv.ParseUint(m[2], 16, 64)
	g.aLen, _ = strconv.Atoi(m[3])
	g.b, _ = strconv.ParseUint(m[4], 16, 64)
	g.bLen, _ = strconv.Atoi(m[5])
	k, err := linuxtest.ParseVMark(serial)
	if err != nil {
		return err
	}
	g.k, g.kLen, g.kPFN0, g.kPFN1, g.kIn = k.VA, k.Len, k.PFN0, k.PFN1, k.In
	if b := regexp.MustCompile(`BANNER ([0-9a-f]+) `).FindStringSubmatch(serial); b != nil {
		g.banner, _ = strconv.ParseUint(b[1], 16, 64)
	}
	sec := func(name string) []string {
		_, rest, _ := strings.Cut(serial, name+"-BEGIN")
		body, _, _ := strings.Cut(rest, name+"-END")
		var out []string
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				out = append(out, l)
			}
		}
		return out
	}
	for _, l := range sec("MODULES") {
		f := strings.Fields(l) // name size refs deps state addr
		if len(f) >= 6 {
			size, _ := strconv.ParseUint(f[1], 10, 64)
			base, _ := strconv.ParseUint(strings.TrimPrefix(f[5], "0x"), 16, 64)
			g.modules[f[0]] = [2]uint64{base, size}
		}
	}
	g.ps = strings.Join(sec("PS"), "\n")
	for _, l := range sec("PAGEMAP") {
		var va, e uint64
		if _, err := fmt.Sscanf(l, "PM %d %x", &va, &e); err != nil {
			return fmt.Errorf("pagemap line %q: %v", l, err)
		}
		g.pagemap[va] = e
	}
	if g.pid == 0 || g.banner == 0 || len(g.pagemap) < 64 || g.modules["nbd"][0] == 0 {
		return fmt.Errorf("guest view incomplete: pid %d, banner %#x, %d pagemap entries, modules %v", g.pid, g.banner, len(g.pagemap), g.modules)
	}
	return nil
}

// phys is the guest-physical address of heapmark's virtual address va, from the
// guest's own pagemap.
func (g *heapGuest) phys(t *testing.T, va uint64) uint64 {
	t.Helper()
	e, ok := g.pagemap[va&^0xfff]
	if !ok || e>>63 == 0 {
		t.Fatalf("heapmark's page %#x not present in the guest's pagemap (%#x)", va&^0xfff, e)
	}
	return (e&(1<<55-1))<<12 | va&0xfff
}

func (g *heapGuest) marker(kind string) string {
	return fmt.Sprintf("DOMAINM-%s-%s-%d-Q7XK2P", kind, g.tag, g.pid)
}

// rules writes a rules folder matching marker A, marker B, a string of the nbd
// module and the kernel's banner.
func (g *heapGuest) rules(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	text := fmt.Sprintf(`rule heap_a { strings: $a = "%s" condition: $a }
rule heap_b { strings: $b = "%s" condition: $b }
rule nbd_string { strings: $s = "NBD_FLAG_SEND_FLUSH" condition: $s }
rule kmod_marker { strings: $k = "DOMAINM-K-%s-Q7XK2P" condition: $k }
`, g.marker("A"), g.marker("B"), g.tag)
	if err := os.WriteFile(filepath.Join(dir, "guest.yar"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
