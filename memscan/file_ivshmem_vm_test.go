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

// TestFileSourceIvshmemInGuest runs the file: backend where Domain M runs it: inside a
// VM that sees the target's RAM file as an ivshmem-plain BAR. A firmware-only target
// VM gets a marker planted in its RAM; a Linux guest (TCG) with the same file as
// ivshmem runs memprobe on /sys/bus/pci/devices/*/resource2 and must report the
// marker at the target GPA where QEMU (xp) sees it.
func TestFileSourceIvshmemInGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux under TCG; skipped with -short")
	}
	ctx := vmContext(t)
	const targetMem = 64 << 20
	target := vmtest.Start(t, vmtest.Config{Memory: targetMem})
	if err := target.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	const gpa = 0x2badf00
	marker := "DOMAINM-IVSHMEM-TARGET-MARK"
	plant(t, target, map[uint64]string{gpa: marker})
	if got, err := target.ReadPhys(ctx, gpa, len(marker)); err != nil || string(got) != marker {
		t.Fatalf("target xp %#x = %q, %v", gpa, got, err)
	}

	dir := t.TempDir()
	probe := filepath.Join(dir, "memprobe")
	if err := vmtest.GoBuildStatic(probe, "./internal/memprobe"); err != nil {
		t.Fatal(err)
	}
	probeBin, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	// The marker reaches the guest split in two, so the guest's own memory never
	// holds it in one piece; only the BAR does.
	half := len(marker) / 2
	script := fmt.Sprintf(`dev=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ]; then dev=$d; fi
done
echo "IVSHMEM $dev"
/bin/memprobe -source file:$dev/resource2 -marker "%s""%s"
echo PROBE-EXIT
while true; do sleep 1; done`, marker[:half], marker[half:])
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, script, map[string][]byte{"bin/memprobe": probeBin}); err != nil {
		t.Fatal(err)
	}
	dm := vmtest.Start(t, vmtest.Config{
		Memory: 256 << 20, Kernel: kernel, Initrd: initrd, Append: "quiet panic=-1",
		Extra: []string{
			"-object", fmt.Sprintf("memory-backend-file,id=hm,mem-path=%s,size=%d,share=on", target.RAMFile, targetMem),
			"-device", "ivshmem-plain,memdev=hm",
		},
	})
	if err := dm.WaitSerial(ctx, "PROBE-EXIT"); err != nil {
		t.Fatal(err)
	}
	out := dm.Serial()
	t.Logf("guest output:\n%s", grepLines(out, "IVSHMEM|READ|RANGES|FOUND|PROBE"))
	if !strings.Contains(out, "PROBE-DONE") {
		t.Fatalf("memprobe failed in the guest:\n%s", out)
	}
	// The reason the file: backend maps instead of reading: read() on a BAR fails.
	if !strings.Contains(out, "resource2: input/output error") {
		t.Errorf("expected read() on resource2 to fail with EIO")
	}
	if want := fmt.Sprintf("RANGES [[0x0-%#x)]", targetMem); !strings.Contains(out, want) {
		t.Errorf("guest source ranges: want %q", want)
	}
	found := regexp.MustCompile(`FOUND (0x[0-9a-f]+)`).FindAllStringSubmatch(out, -1)
	if len(found) != 1 || found[0][1] != fmt.Sprintf("%#x", gpa) {
		t.Fatalf("memprobe found %v, want exactly [%#x]", found, gpa)
	}
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
