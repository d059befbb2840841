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

// guestView describes how a Linux guest (Domain M) is given the target's RAM file.
type guestView struct {
	files  map[string][]byte // extra initramfs files
	setup  string            // shell run before memprobe; sets $src to the file: path
	config func(ramFile string, size uint64) vmtest.Config
}

// probeFromGuest plants marker at gpa in a stopped firmware-only target VM, boots a Linux
// guest (TCG) that sees the target's RAM file as view describes, runs memprobe (the
// file: backend) on it there, and checks that exactly that GPA is reported. It returns
// the guest's serial output.
func probeFromGuest(t *testing.T, view guestView, gpa uint64, marker string) string {
	t.Helper()
	ctx := vmContext(t)
	const targetMem = 64 << 20
	target := vmtest.Start(t, vmtest.Config{Memory: targetMem})
	if err := target.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	plant(t, target, map[uint64]string{gpa: marker})
	if got, err := target.ReadPhys(ctx, gpa, len(marker)); err != nil || string(got) != marker {
		t.Fatalf("target xp %#x = %q, %v", gpa, got, err)
	}

	dir := t.TempDir()
	probe := filepath.Join(dir, "memprobe")
	if err := vmtest.GoBuildStatic(probe, "./cmd/memprobe"); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for k, v := range view.files {
		files[k] = v
	}
	var err error
	if files["bin/memprobe"], err = os.ReadFile(probe); err != nil {
		t.Fatal(err)
	}
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	// The marker reaches the guest split in two, so the guest's own memory never holds
	// it in one piece; only the target's RAM does.
	half := len(marker) / 2
	script := fmt.Sprintf(`%s
/bin/memprobe -source file:$src -marker "%s""%s"
echo PROBE-EXIT
while true; do sleep 1; done`, view.setup, marker[:half], marker[half:])
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, script, files); err != nil {
		t.Fatal(err)
	}
	cfg := view.config(target.RAMFile, targetMem)
	cfg.Kernel, cfg.Initrd, cfg.Append = kernel, initrd, "quiet panic=-1"
	dm := vmtest.Start(t, cfg)
	if err := dm.WaitSerial(ctx, "PROBE-EXIT"); err != nil {
		t.Fatal(err)
	}
	out := dm.Serial()
	t.Logf("guest output:\n%s", grepLines(out, "VIEW|READ|RANGES|FOUND|PROBE"))
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
	return out
}

func grepLines(s, pattern string) string {
	re := regexp.MustCompile(pattern)
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if re.MatchString(l) {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	return strings.Join(keep, "\n")
}

// TestFileSourceIvshmemInGuest: the target's RAM file as an ivshmem-plain BAR, read through
// /sys/bus/pci/devices/*/resource2 (which must be mmapped: read() fails with EIO).
func TestFileSourceIvshmemInGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux under TCG; skipped with -short")
	}
	view := guestView{
		setup: `for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ]; then src=$d/resource2; fi
done
echo "VIEW $src"`,
		config: func(ram string, size uint64) vmtest.Config {
			return vmtest.Config{Memory: 256 << 20, Extra: []string{
				"-object", fmt.Sprintf("memory-backend-file,id=hm,mem-path=%s,size=%d,share=on", ram, size),
				"-device", "ivshmem-plain,memdev=hm",
			}}
		},
	}
	out := probeFromGuest(t, view, 0x2badf00, "DOMAINM-IVSHMEM-TARGET-MARK")
	if !strings.Contains(out, "resource2: input/output error") {
		t.Errorf("expected read() on resource2 to fail with EIO")
	}
}

// TestFileSourceNvdimmInGuest: the target's RAM file as an nvdimm, the view that
// co-migrates on QEMU (ivshmem cannot with x-ignore-shared, see migrate-hooks/internal/host);
// Linux exposes it as the block device /dev/pmem0 once the nvdimm modules are loaded.
func TestFileSourceNvdimmInGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux under TCG; skipped with -short")
	}
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	release := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	files := map[string][]byte{}
	var insmods []string
	// The Debian kernel has the nvdimm drivers as modules; load them in dependency order.
	for _, m := range []string{"drivers/nvdimm/libnvdimm", "drivers/nvdimm/nd_btt", "drivers/nvdimm/nd_pmem", "drivers/acpi/nfit/nfit"} {
		b, err := os.ReadFile(filepath.Join("/lib/modules", release, "kernel", m+".ko"))
		if err != nil {
			t.Fatalf("kernel module for the nvdimm test: %v (install linux-image-amd64)", err)
		}
		name := "mod/" + filepath.Base(m) + ".ko"
		files[name] = b
		insmods = append(insmods, "insmod /"+name)
	}
	view := guestView{
		files: files,
		setup: strings.Join(insmods, "\n") + `
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/pmem0 ] && break; sleep 1; done
src=/dev/pmem0
echo "VIEW $src $(cat /sys/block/pmem0/size 2>/dev/null) sectors"`,
		config: func(ram string, size uint64) vmtest.Config {
			const mem = 256 << 20
			return vmtest.Config{Memory: mem,
				MachineOpts: ",nvdimm=on", MemoryOpts: fmt.Sprintf(",slots=1,maxmem=%dM", (mem+size)>>20),
				Extra: []string{
					"-object", fmt.Sprintf("memory-backend-file,id=nv,mem-path=%s,size=%d,share=on", ram, size),
					"-device", "nvdimm,memdev=nv,id=nv",
				}}
		},
	}
	probeFromGuest(t, view, 0x1c0ffe0, "DOMAINM-NVDIMM-TARGET-MARK")
}
