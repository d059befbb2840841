package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/diskscan/ext4test"
	"github.com/domainm/domainm/image/ganesha"
	"github.com/domainm/domainm/memscan/vmtest"
)

// TestDiskOverNFS: domainm run, inside a Linux guest, checks the target's disk image on
// a read-only soft NFS mount of a real nfs-ganesha export. Ganesha is stopped: `domainm
// status` names disk-unreachable and one disk-storage-unreachable alert says so. A
// setuid file is planted in the image while the export is away. Ganesha is started
// again: checks resume by themselves (disk-storage-back, the problem gone), the planted
// file is alerted exactly once, and nothing else is reported as changed.
func TestDiskOverNFS(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	start := time.Now()
	dir := t.TempDir()
	export := filepath.Join(dir, "export")
	mustMkdir(t, export)
	img := filepath.Join(export, "target.img")
	tree := ext4test.WriteTree(t, map[string]string{"etc/passwd": "root:x:0:0::/root:/bin/sh\n",
		"usr/bin/tool": "#!/bin/sh\necho tool\n", "home/alice/notes": "notes\n"})
	ext4test.Mkfs(t, img, tree, 16, "-b", "4096")

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	nfs, err := ganesha.Start(ctx, ganesha.Config{Export: export})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nfs.Close() })
	vm := startDomM(ctx, t, dir, nfs)
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	step("Domain M stand-in booted, domainm running")

	waitConsole(ctx, t, vm, "first check with a baseline", func(c Console) bool {
		return len(c.With("disk-baseline-created", "")) == 1 && c.Last().DiskChecks >= 1 && healthy(c.Last())
	})
	step("baseline recorded over NFS, healthy")

	if err := nfs.Stop(); err != nil {
		t.Fatal(err)
	}
	step("ganesha stopped")
	waitConsole(ctx, t, vm, "disk-unreachable", func(c Console) bool {
		return HasProblem(c.Last(), proto.ProblemDiskUnreachable) && len(c.With("disk-storage-unreachable", "")) == 1
	})
	step("status names disk-unreachable, alert disk-storage-unreachable")

	const planted = "/usr/bin/.helper"
	src := filepath.Join(dir, "backdoor")
	if err := os.WriteFile(src, []byte("#!/bin/sh\nexec /bin/sh -p\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ext4test.Debugfs(t, img, "write "+src+" "+planted, "sif "+planted+" mode 0104755")
	time.Sleep(10 * time.Second) // checks keep failing meanwhile
	if c := ParseConsole(vm.Serial()); len(c.With("disk-storage-unreachable", "")) != 1 || !HasProblem(c.Last(), proto.ProblemDiskUnreachable) {
		t.Errorf("during the outage: %d disk-storage-unreachable alerts (want 1), last status %+v",
			len(c.With("disk-storage-unreachable", "")), c.Last().Health)
	}

	if err := nfs.Start(ctx); err != nil {
		t.Fatal(err)
	}
	step("ganesha started again")
	var back int
	waitConsole(ctx, t, vm, "checks resume", func(c Console) bool {
		back = c.Last().DiskChecks
		return len(c.With("disk-storage-back", "")) == 1 && len(c.With("file-added", planted)) == 1 && healthy(c.Last())
	})
	step("disk-storage-back, planted setuid file alerted, healthy")
	waitConsole(ctx, t, vm, "two more checks", func(c Console) bool { return c.Last().DiskChecks >= back+2 })
	c := ParseConsole(vm.Serial())
	if n := len(c.With("file-added", planted)); n != 1 {
		t.Errorf("planted file alerted %d times, want 1", n)
	}
	for _, a := range c.Alerts {
		if strings.HasPrefix(a.Event.Action, "file-") && a.File.Path != planted {
			t.Errorf("false change reported: %s", a.Raw)
		}
	}
	if a := c.With("file-added", planted); len(a) == 1 && (a[0].File.Mode != "4755" || a[0].Host.Name != "nfs-target") {
		t.Errorf("file-added alert: mode %q target %q: %s", a[0].File.Mode, a[0].Host.Name, a[0].Raw)
	}
	for _, l := range strings.Split(vm.Serial(), "\n") {
		if strings.Contains(l, "GUEST-MOUNT ") {
			t.Logf("guest: %s", strings.TrimSpace(l))
		}
	}
	t.Logf("alerts:\n%s", alertList(c))
	step("done")
}

func startDomM(ctx context.Context, t *testing.T, dir string, nfs *ganesha.Server) *vmtest.VM {
	t.Helper()
	bin, err := BuildDomainm(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := DomM{Domainm: bin, NFSPort: nfs.Port, Pseudo: nfs.Pseudo,
		Rules:  map[string]string{"t.yar": `rule t { strings: $a = "NOT-IN-THIS-TEST" condition: $a }` + "\n"},
		Setup:  "dd if=/dev/zero of=/tmp/ram bs=1M count=4 2>/dev/null",
		Config: nfsConfig("nfs-target", "file:/tmp/ram", GuestMount+"/target.img", "3s")}
	g, err := d.Guest()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "domm.cpio")
	if err := g.Build(initrd); err != nil {
		t.Fatal(err)
	}
	vm := vmtest.Start(t, vmtest.Config{Memory: 512 << 20, Kernel: g.Kernel, Initrd: initrd,
		Append: "quiet panic=-1 no_timer_check", Timeout: 60 * time.Second,
		Extra: []string{"-nic", "user,model=virtio-net-pci"}})
	if err := vm.WaitSerial(ctx, domainmStart); err != nil {
		t.Fatalf("domainm did not start in the guest: %v\n%s", err, vm.Serial())
	}
	if !strings.Contains(vm.Serial(), "GUEST-MOUNT ") {
		t.Fatalf("the export was not mounted in the guest:\n%s", vm.Serial())
	}
	return vm
}

// nfsConfig is the stand-in's domainm.toml.
func nfsConfig(name, memory, disk, interval string) string {
	return fmt.Sprintf(`[target]
name = %q
uuid = "5b0c2f6e-4d1a-4c8e-9f00-11aa22bb33cc"
memory = %q
disk = %q
disk_format = "raw"
[memory]
interval = "5s"
[disk]
interval = %q
[rules]
dir = %q
[state]
dir = %q
[control]
socket = %q
[[alerts.sink]]
name = "local"
type = "file"
path = %q
`, name, memory, disk, interval, GuestRules, GuestState, GuestSocket, GuestAlerts)
}

func healthy(r proto.Response) bool { return r.Health != nil && r.Health.Healthy }

// waitConsole polls the guest's console until cond holds.
func waitConsole(ctx context.Context, t *testing.T, vm *vmtest.VM, what string, cond func(Console) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	for {
		c := ParseConsole(vm.Serial())
		if cond(c) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; last status %+v\nalerts:\n%s\nconsole tail:\n%s", what, c.Last().Health,
				alertList(c), tail(vm.Serial(), 40))
		case <-time.After(time.Second):
		}
	}
}

func alertList(c Console) string {
	var b strings.Builder
	for _, a := range c.Alerts {
		fmt.Fprintf(&b, "  %s %s %s\n", a.Event.Action, a.File.Path, a.Message)
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}
