package memscan

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/domainm/domainm/memscan/vmtest"
)

// TestFileSourceNvdimmInGuest runs the file: backend the way a co-migrating Domain M VM
// sees the target on QEMU: the target's RAM file as an nvdimm (ivshmem cannot co-migrate
// with x-ignore-shared, see migrate-hooks/host), which Linux in Domain M exposes as the
// block device /dev/pmem0. A firmware-only target gets a marker planted in its RAM; a
// Linux guest (TCG) loads the nvdimm drivers and runs memprobe on file:/dev/pmem0, which
// must report the marker at the target GPA where QEMU (xp) sees it.
func TestFileSourceNvdimmInGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux under TCG; skipped with -short")
	}
	ctx := vmContext(t)
	const targetMem = 64 << 20
	target := vmtest.Start(t, vmtest.Config{Memory: targetMem})
	if err := target.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	const gpa = 0x1c0ffe0
	marker := "DOMAINM-NVDIMM-TARGET-MARK"
	plant(t, target, map[uint64]string{gpa: marker})
	if got, err := target.ReadPhys(ctx, gpa, len(marker)); err != nil || string(got) != marker {
		t.Fatalf("target xp %#x = %q, %v", gpa, got, err)
	}

	dir := t.TempDir()
	probe := filepath.Join(dir, "memprobe")
	if err := vmtest.GoBuildStatic(probe, "./internal/memprobe"); err != nil {
		t.Fatal(err)
	}
	extra := map[string][]byte{}
	if extra["bin/memprobe"], _ = os.ReadFile(probe); len(extra["bin/memprobe"]) == 0 {
		t.Fatalf("reading %s", probe)
	}
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	// The Debian kernel has the nvdimm drivers as modules; load them in dependency order.
	release := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	var insmods []string
	for _, m := range []string{"drivers/nvdimm/libnvdimm", "drivers/nvdimm/nd_btt", "drivers/nvdimm/nd_pmem", "drivers/acpi/nfit/nfit"} {
		src := filepath.Join("/lib/modules", release, "kernel", m+".ko")
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("kernel module for the nvdimm test: %v (install linux-image-amd64)", err)
		}
		name := "mod/" + filepath.Base(src)
		extra[name] = b
		insmods = append(insmods, "insmod /"+name)
	}
	half := len(marker) / 2 // split, so only the nvdimm holds the marker in one piece
	script := fmt.Sprintf(`%s
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/pmem0 ] && break; sleep 1; done
echo "PMEM $(cat /sys/block/pmem0/size 2>/dev/null) sectors"
/bin/memprobe -source file:/dev/pmem0 -marker "%s""%s"
echo PROBE-EXIT
while true; do sleep 1; done`, strings.Join(insmods, "\n"), marker[:half], marker[half:])
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, script, extra); err != nil {
		t.Fatal(err)
	}
	const dmMem = 256 << 20
	dm := vmtest.Start(t, vmtest.Config{
		Memory: dmMem, Kernel: kernel, Initrd: initrd, Append: "quiet panic=-1",
		MachineOpts: ",nvdimm=on", MemoryOpts: fmt.Sprintf(",slots=1,maxmem=%dM", (dmMem+targetMem)>>20),
		Extra: []string{
			"-object", fmt.Sprintf("memory-backend-file,id=nv,mem-path=%s,size=%d,share=on", target.RAMFile, targetMem),
			"-device", "nvdimm,memdev=nv,id=nv",
		},
	})
	if err := dm.WaitSerial(ctx, "PROBE-EXIT"); err != nil {
		t.Fatal(err)
	}
	out := dm.Serial()
	t.Logf("guest output:\n%s", grepLines(out, "PMEM|READ|RANGES|FOUND|PROBE|insmod"))
	if !strings.Contains(out, "PROBE-DONE") {
		t.Fatalf("memprobe failed in the guest:\n%s", out)
	}
	if want := fmt.Sprintf("RANGES [[0x0-%#x)]", targetMem); !strings.Contains(out, want) {
		t.Errorf("guest source ranges: want %q", want)
	}
	found := regexp.MustCompile(`FOUND (0x[0-9a-f]+)`).FindAllStringSubmatch(out, -1)
	if len(found) != 1 || found[0][1] != fmt.Sprintf("%#x", gpa) {
		t.Fatalf("memprobe found %v, want exactly [%#x]", found, gpa)
	}
}
