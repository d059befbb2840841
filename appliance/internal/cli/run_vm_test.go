package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/memscan/vmtest"
)

// TestRunInsideDomainMVM runs `domainm run` where it is meant to run: inside a Domain M
// VM (Linux under TCG, booted from an initramfs holding domainm and its libraries),
// reading the target's RAM file through an ivshmem-plain device (BAR2 in sysfs) and
// answering the coordinator on a virtio-serial port whose host end is a unix socket.
// The planted string is alerted inside the VM (the alert file's actions are echoed on
// the serial console), and the handshake runs from the host over the port.
func TestRunInsideDomainMVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	kernel, err := vmtest.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	modDir := filepath.Join("/lib/modules", strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-"), "kernel/drivers")
	bin := domainmBinary(t)
	dir := t.TempDir()

	// The target's RAM as the host holds it, with an implant at a known offset.
	const implant = "DOMAINM-IVSHMEM-IMPLANT-51"
	target := filepath.Join(dir, "target.ram")
	f, err := os.Create(target)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(16 << 20)
	f.WriteAt([]byte(implant), 9<<20+77)
	f.Close()

	extra := map[string][]byte{}
	add := func(guestPath, hostPath string) {
		b, err := os.ReadFile(hostPath)
		if err != nil {
			t.Fatalf("initramfs: %v", err)
		}
		extra[guestPath] = b
	}
	add("/bin/domainm", bin)
	for _, lib := range sharedLibs(t, bin) {
		add(lib, lib)
	}
	mods := []string{"virtio/virtio_ring.ko", "virtio/virtio.ko", "virtio/virtio_pci_legacy_dev.ko",
		"virtio/virtio_pci_modern_dev.ko", "virtio/virtio_pci.ko", "char/virtio_console.ko"}
	for _, m := range mods {
		add("/mod/"+filepath.Base(m), filepath.Join(modDir, m))
	}
	const implant2 = "DOMAINM-IVSHMEM-SECOND-52"
	extra["/etc/domainm/rules/implant.yar"] = []byte(`rule ivshmem_implant { strings: $a = "` + implant + `" condition: $a }` + "\n" +
		`rule ivshmem_second { strings: $a = "` + implant2 + `" condition: $a }` + "\n")

	// The init script finds the ivshmem BAR and the control port, writes the config and
	// runs domainm; the alert file is copied to the console as it grows.
	script := `for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console; do insmod /mod/$m.ko; done
mount -t tmpfs tmpfs /tmp
bar=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor):$(cat $d/device)" = "0x1af4:0x1110" ]; then bar=$d/resource2; fi
done
port=
for i in 1 2 3 4 5 6 7 8 9 10; do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat $p/name 2>/dev/null)" = org.domainm.control ] && port=/dev/$(basename $p)
  done
  [ -n "$port" ] && [ -e "$port" ] && break
  sleep 1
done
echo "GUEST-BAR=$bar"
echo "GUEST-PORT=$port"
cat > /etc/domainm/domainm.toml <<EOF
[target]
name = "ivshmem-target"
memory = "file:$bar"
[memory]
interval = "1s"
block_size = "1MiB"
[rules]
dir = "/etc/domainm/rules"
[state]
dir = "/tmp/state"
[control]
socket = ""
device = "$port"
[[alerts.sink]]
name = "local"
type = "file"
path = "/tmp/alerts.jsonl"
EOF
/bin/domainm run --config /etc/domainm/domainm.toml --log-level warn 2>&1 | sed 's/^/GUEST-LOG /' &
echo GUEST-STARTED
while true; do
  sleep 1
  # (busybox grep -o prints one match per line, hence two greps)
  echo "GUEST-ALERTS $(grep -o '"action":"[a-z-]*"' /tmp/alerts.jsonl 2>/dev/null | tr '\n' ' ')"
  echo "GUEST-MATCHES $(grep -o 'guest memory at 0x[0-9a-f]*' /tmp/alerts.jsonl 2>/dev/null | tr '\n' ' ')"
done`
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, script, extra); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctl.sock")
	vm := vmtest.Start(t, vmtest.Config{Memory: 512 << 20, Kernel: kernel, Initrd: initrd,
		Append: "quiet panic=-1", Timeout: 60 * time.Second, Extra: []string{
			"-object", fmt.Sprintf("memory-backend-file,id=target,size=%d,mem-path=%s,share=on", 16<<20, target),
			"-device", "ivshmem-plain,memdev=target",
			"-device", "virtio-serial-pci",
			"-chardev", "socket,id=ctl,path=" + sock + ",server=on,wait=off",
			"-device", "virtserialport,chardev=ctl,name=org.domainm.control",
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := vm.WaitSerial(ctx, "GUEST-STARTED"); err != nil {
		t.Fatalf("guest did not start domainm: %v\n%s", err, vm.Serial())
	}
	bar := regexp.MustCompile(`GUEST-BAR=(\S+)`).FindStringSubmatch(vm.Serial())
	if bar == nil {
		t.Fatalf("no ivshmem BAR in the guest:\n%s", vm.Serial())
	}
	actx, acancel := context.WithTimeout(ctx, 60*time.Second)
	defer acancel()
	if err := vm.WaitSerial(actx, `"action":"memory-match"`); err != nil {
		t.Fatalf("no memory-match alert from inside the VM: %v\n%s", err, vm.Serial())
	}
	// The guest prints the matched addresses on the line after the actions: wait for it.
	if err := vm.WaitSerial(actx, fmt.Sprintf("guest memory at %#x", 9<<20+77)); err != nil {
		t.Errorf("the alert does not give the implant's address %#x: %v\n%s", 9<<20+77, err, vm.Serial())
	}

	// The coordinator's side of the handshake, over the virtio-serial port.
	c, err := control.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := func(cmd string, args any) control.Response {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		r, err := c.Do(cctx, cmd, args)
		if err != nil {
			t.Fatalf("%s over virtio-serial: %v\n%s", cmd, err, vm.Serial())
		}
		return r
	}
	if r := call("status", nil); !r.OK || r.State != "monitoring" {
		t.Fatalf("status = %+v", r)
	}
	if r := call("prepare", nil); !r.OK || r.State != "quiesced" {
		t.Fatalf("prepare = %+v", r)
	}
	if r := call("resume", control.ResumeArgs{Source: "file:" + bar[1], Layout: "flat"}); !r.OK || r.State != "monitoring" {
		t.Fatalf("resume = %+v", r)
	}
	// Monitoring goes on after the handshake: a new implant written into the target's
	// RAM on the host is found through the ivshmem BAR.
	f, err = os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte(implant2), 3<<20+5)
	f.Close()
	actx2, acancel2 := context.WithTimeout(ctx, 60*time.Second)
	defer acancel2()
	if err := vm.WaitSerial(actx2, fmt.Sprintf("guest memory at %#x", 3<<20+5)); err != nil {
		t.Fatalf("the implant written after resume was not alerted: %v\n%s", err, vm.Serial())
	}
	if strings.Contains(vm.Serial(), `"action":"memory-match-gone"`) {
		t.Errorf("a finding was reported gone across the handshake:\n%s", vm.Serial())
	}
	if strings.Contains(vm.Serial(), "GUEST-LOG") && strings.Contains(vm.Serial(), "level=ERROR") {
		t.Errorf("domainm logged errors inside the VM:\n%s", vm.Serial())
	}
}

// sharedLibs lists the shared libraries bin loads, the dynamic loader included.
func sharedLibs(t *testing.T, bin string) []string {
	t.Helper()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	return regexp.MustCompile(`(?m)(/\S+\.so[.\d]*)`).FindAllString(string(out), -1)
}
