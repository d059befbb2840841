package memscan

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/memscan/elfcore"
	"github.com/domainm/domainm/memscan/vmtest"
)

// plant writes each string into the VM's RAM file at a file offset.
func plant(t *testing.T, vm *vmtest.VM, at map[uint64]string) {
	t.Helper()
	for off, s := range at {
		if err := vm.WriteRAM(int64(off), []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
}

// checkGuestAndSource checks that QEMU (xp) and src both see s at each GPA.
func checkGuestAndSource(ctx context.Context, t *testing.T, vm *vmtest.VM, src Source, at map[uint64]string) {
	t.Helper()
	for gpa, s := range at {
		got, err := vm.ReadPhys(ctx, gpa, len(s))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != s {
			t.Errorf("guest view (xp) at %#x = %q, want %q", gpa, got, s)
		}
		if got := readString(t, src, gpa, len(s)); got != s {
			t.Errorf("source at %#x = %q, want %q", gpa, got, s)
		}
	}
}

func vmContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestFileSourceLiveVM: a real QEMU guest's RAM file read through file: matches what
// the guest sees, including bytes written after the source was opened (MAP_SHARED)
// and data the firmware itself wrote.
func TestFileSourceLiveVM(t *testing.T) {
	ctx := vmContext(t)
	const size = 128 << 20
	vm := vmtest.Start(t, vmtest.Config{Memory: size})
	src, err := Open("file:"+vm.RAMFile, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// Firmware-written data, seen live through the mapping: SeaBIOS leaves the ACPI
	// RSDP ("RSD PTR ") in the 0xe0000-0xfffff BIOS area while it boots.
	win := make([]byte, 0x20000)
	rsdp := -1
	for deadline := time.Now().Add(30 * time.Second); rsdp < 0 && time.Now().Before(deadline); {
		if _, err := src.ReadAt(win, 0xe0000); err != nil {
			t.Fatal(err)
		}
		if rsdp = bytes.Index(win, []byte("RSD PTR ")); rsdp < 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if rsdp < 0 {
		t.Fatal("no ACPI RSDP appeared in the BIOS area of the RAM file within 30 s")
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := src.Ranges(); len(got) != 1 || got[0] != (Range{0, size}) {
		t.Fatalf("ranges = %v", got)
	}
	at := map[uint64]string{
		0x200000:  "DOMAINM-FLAT-LOW",
		0x5555555: "DOMAINM-ODD-ADDRESS",
		0x3000ffc: "DOMAINM-STRADDLES-PAGE",
		size - 16: "DOMAINM-END-RAM!",
	}
	plant(t, vm, at)
	checkGuestAndSource(ctx, t, vm, src, at)

	// Source and guest agree on where the RSDP is and what it says.
	if _, err := src.ReadAt(win, 0xe0000); err != nil {
		t.Fatal(err)
	}
	i := rsdp
	gpa := uint64(0xe0000 + i)
	guest, err := vm.ReadPhys(ctx, gpa, 20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(guest, win[i:i+20]) {
		t.Fatalf("RSDP at %#x: guest %x, source %x", gpa, guest, win[i:i+20])
	}
	t.Logf("accelerator %s; firmware RSDP found at GPA %#x", vm.Accel, gpa)
}

// TestFileSourceSplitLayouts boots real QEMU guests with RAM around the low-memory
// limits and checks, for each layout, that a string planted at a RAM-file offset is
// where QEMU (xp) puts it in guest-physical memory and where the Source reads it:
// below the limit at GPA = offset, above it at GPA 4 GiB + (offset - limit). The RAM
// files stay sparse (only planted pages and what the firmware touched use memory).
func TestFileSourceSplitLayouts(t *testing.T) {
	tests := []struct {
		name    string
		machine string
		size    uint64
		layout  string
		lowmem  uint64 // QEMU's below-4G RAM; == size when not split
	}{
		{"q35-3G", "q35", 3 << 30, "q35", 2 << 30},
		{"q35-below-threshold", "q35", 0xb0000000 - 2<<20, "q35", 0xb0000000 - 2<<20},
		{"pc-3.5G", "pc", 0xe0000000, "pc", 3 << 30},
		{"q35-max-ram-below-4g", "q35,max-ram-below-4g=1G", 3 << 30, "split:1G", 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkSplit(t, tc.machine, tc.size, tc.layout, tc.lowmem)
		})
	}
}

func checkSplit(t *testing.T, machine string, size uint64, layout string, lowmem uint64) {
	ctx := vmContext(t)
	vm := vmtest.Start(t, vmtest.Config{Memory: size, Machine: machine})
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	gpaOf := func(off uint64) uint64 {
		if off < lowmem {
			return off
		}
		return 4<<30 + off - lowmem
	}
	byOffset := map[uint64]string{
		0x1000000: "DOMAINM-SPLIT-LOW",
		size - 21: "DOMAINM-SPLIT-END-RAM",
	}
	if lowmem < size {
		byOffset[lowmem-32] = "DOMAINM-LAST-LOW-BYTES"
		byOffset[lowmem+0x100000] = "DOMAINM-SPLIT-HIGH"
	}
	plant(t, vm, byOffset)
	byGPA := map[uint64]string{}
	for off, s := range byOffset {
		byGPA[gpaOf(off)] = s
	}
	l, err := ParseLayout(layout)
	if err != nil {
		t.Fatal(err)
	}
	src, err := Open("file:"+vm.RAMFile, OpenOptions{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	want := []Range{{0, lowmem}}
	if lowmem < size {
		want = append(want, Range{4 << 30, size - lowmem})
	}
	if got := src.Ranges(); !equalRanges(got, want) {
		t.Fatalf("ranges = %v, want %v", got, want)
	}
	checkGuestAndSource(ctx, t, vm, src, byGPA)

	// The guest has no RAM right after the low part (PCI hole) nor past the end; the
	// high string is not at its flat file offset.
	holes := []uint64{gpaOf(size-1) + 1}
	if lowmem < size {
		holes = append(holes, lowmem+0x100000)
	}
	for _, gpa := range holes {
		got, err := vm.ReadPhys(ctx, gpa, 18)
		if err != nil && !errors.Is(err, vmtest.ErrNotMemory) {
			t.Fatal(err)
		}
		if string(got) == "DOMAINM-SPLIT-HIGH" {
			t.Errorf("guest sees the high string at its flat offset %#x: RAM is not split", gpa)
		}
		if _, err := src.ReadAt(make([]byte, 16), int64(gpa)); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("source at %#x: %v, want ErrOutOfRange", gpa, err)
		}
	}
	fi, err := os.Stat(vm.RAMFile)
	if err != nil {
		t.Fatal(err)
	}
	if used := fileBlocks(fi) * 512; used > 256<<20 {
		t.Errorf("RAM file uses %d MiB; expected it to stay sparse", used>>20)
	} else {
		t.Logf("accelerator %s; %d MiB RAM file uses %d KiB", vm.Accel, size>>20, used>>10)
	}
}

func equalRanges(a, b []Range) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestELFSourceFromDump takes a real dump-guest-memory core from a QEMU guest and
// reads the planted strings at their GPAs; truncated and corrupt copies fail clearly.
func TestELFSourceFromDump(t *testing.T) {
	ctx := vmContext(t)
	const size = 64 << 20
	vm := vmtest.Start(t, vmtest.Config{Memory: size})
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	at := map[uint64]string{0x300000: "DOMAINM-ELF-PLANTED", size - 24: "DOMAINM-ELF-END-OF-RAM"}
	plant(t, vm, at)
	dump := filepath.Join(t.TempDir(), "core.elf")
	if err := vm.DumpGuestMemory(ctx, dump); err != nil {
		t.Fatal(err)
	}
	src, err := Open("elf:"+dump, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	t.Logf("dump ranges: %v", src.Ranges())
	checkGuestAndSource(ctx, t, vm, src, at)
	checkCorruptCores(t, dump)
}

// checkCorruptCores derives broken copies of a real core and expects clear errors.
func checkCorruptCores(t *testing.T, dump string) {
	t.Helper()
	orig, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dump)
	if err != nil {
		t.Fatal(err)
	}
	core, err := elfcore.Parse(f, int64(len(orig)))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	last := core.Loads[len(core.Loads)-1]
	dir := t.TempDir()
	cases := []struct {
		name   string
		mutate func([]byte) []byte
		want   string
	}{
		{"truncated-mid-data", func(b []byte) []byte { return b[:last.Offset+last.FileSize/2] }, "truncated dump"},
		{"truncated-header", func(b []byte) []byte { return b[:30] }, "truncated"},
		{"bad-magic", func(b []byte) []byte { b[1] = 'X'; return b }, "not an ELF file"},
		{"bad-phentsize", func(b []byte) []byte {
			if core.Class == 64 {
				b[54] = 7
			} else {
				b[42] = 7
			}
			return b
		}, "program header size"},
	}
	for _, tc := range cases {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, tc.mutate(append([]byte(nil), orig...)), 0o600); err != nil {
			t.Fatal(err)
		}
		src, err := Open("elf:"+p, OpenOptions{})
		if err == nil {
			src.Close()
			t.Errorf("%s: opened without error", tc.name)
			continue
		}
		if !errors.Is(err, elfcore.ErrFormat) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrFormat mentioning %q", tc.name, err, tc.want)
		}
		t.Logf("%s: %v", tc.name, err)
	}
}

// TestLinuxGuestMemory boots Linux (TCG) with a busybox init that builds a marker
// string at run time (it never appears literally in the image) and keeps it in
// memory; the marker is found through file: and at the same GPA through xp and in an
// ELF64 dump.
func TestLinuxGuestMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux under TCG (~10 s); skipped with -short")
	}
	ctx := vmContext(t)
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	script := `a=DOMAINM; b=GUEST
marker="$a-$b-RUNTIME-$((6*7))-MARKER"
echo "$marker" > /tmp/marker
echo VMTEST-READY
while true; do sleep 1; done`
	if err := vmtest.BuildInitramfs(initrd, script, nil); err != nil {
		t.Fatal(err)
	}
	vm := vmtest.Start(t, vmtest.Config{Memory: 256 << 20, Kernel: kernel, Initrd: initrd, Append: "quiet panic=-1"})
	if err := vm.WaitSerial(ctx, "VMTEST-READY"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	marker := []byte("DOMAINM-GUEST-RUNTIME-42-MARKER")
	src, err := Open("file:"+vm.RAMFile, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	hits := findAll(t, src, marker, 4)
	if len(hits) == 0 {
		t.Fatal("marker not found in the guest's RAM file")
	}
	for _, gpa := range hits {
		got, err := vm.ReadPhys(ctx, gpa, len(marker))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, marker) {
			t.Fatalf("xp %#x = %q, want the marker", gpa, got)
		}
	}
	dump := filepath.Join(t.TempDir(), "linux.elf")
	if err := vm.DumpGuestMemory(ctx, dump); err != nil {
		t.Fatal(err)
	}
	esrc, err := OpenELF(dump)
	if err != nil {
		t.Fatal(err)
	}
	defer esrc.Close()
	for _, gpa := range hits {
		if got := readString(t, esrc, gpa, len(marker)); got != string(marker) {
			t.Fatalf("ELF dump at %#x = %q, want the marker", gpa, got)
		}
	}
	t.Logf("accelerator %s; marker at GPAs %#x; dump ranges %v", vm.Accel, hits, esrc.Ranges())
}

// findAll returns up to max GPAs where needle occurs in src.
func findAll(t *testing.T, src Source, needle []byte, max int) []uint64 {
	t.Helper()
	var hits []uint64
	for _, r := range src.Ranges() {
		b := make([]byte, r.Size)
		if _, err := src.ReadAt(b, int64(r.GPA)); err != nil {
			t.Fatal(err)
		}
		for off := 0; len(hits) < max; {
			i := bytes.Index(b[off:], needle)
			if i < 0 {
				break
			}
			hits = append(hits, r.GPA+uint64(off+i))
			off += i + 1
		}
	}
	return hits
}
