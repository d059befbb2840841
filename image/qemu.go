// Package image is the appliance image as data: its recipe (build.sh, rootfs.sh,
// rootfs/, initramfs/), its units (systemd/) and default config (domainm.toml), and the
// QEMU command line that boots a build directly (Boot.Args). The tests build the image,
// boot it under QEMU and watch its serial console.
package image

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Boot describes one direct boot of a built image (the output folder of build.sh).
type Boot struct {
	Dir      string // build output: vmlinuz, initrd.img, cmdline, disk.raw
	Disk     string // disk image; default Dir/disk.raw
	Snapshot bool   // writes go to a temporary overlay, the disk file stays as built
	Serial   string // file that receives the serial console
	// Files become fw_cfg entries opt/domainm/NAME (host file paths); the initramfs
	// copies "config" to /etc/domainm/domainm.toml and any other NAME to /etc/domainm/NAME.
	Files  map[string]string
	MemMiB int    // guest RAM; default 512
	Accel  string // "tcg" (default) or "kvm"
	Append string // extra kernel command line
	Extra  []string
}

// Args returns the QEMU command line (program first). A Linux guest runs under TCG by
// default: on this project's lab machines a Debian kernel hangs early under the nested
// KVM (DESIGN.md, "Test lab"); set Accel to "kvm" where it boots.
func (b Boot) Args() ([]string, error) {
	cmdline, err := os.ReadFile(filepath.Join(b.Dir, "cmdline"))
	if err != nil {
		return nil, fmt.Errorf("reading the image's kernel command line: %w", err)
	}
	disk, mem, accel := b.Disk, b.MemMiB, b.Accel
	if disk == "" {
		disk = filepath.Join(b.Dir, "disk.raw")
	}
	if mem == 0 {
		mem = 512
	}
	if accel == "" {
		accel = "tcg"
	}
	drive := "if=none,id=disk,format=raw,file=" + disk
	if b.Snapshot {
		drive += ",snapshot=on"
	}
	args := []string{"qemu-system-x86_64",
		"-machine", "q35,accel=" + accel, "-m", fmt.Sprint(mem), "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-nic", "none",
		"-serial", "file:" + b.Serial,
		"-kernel", filepath.Join(b.Dir, "vmlinuz"), "-initrd", filepath.Join(b.Dir, "initrd.img"),
		"-append", strings.TrimSpace(strings.TrimSpace(string(cmdline)) + " " + b.Append),
		"-drive", drive, "-device", "virtio-blk-pci,drive=disk",
	}
	names := make([]string, 0, len(b.Files))
	for n := range b.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		args = append(args, "-fw_cfg", "name=opt/domainm/"+n+",file="+b.Files[n])
	}
	return append(args, b.Extra...), nil
}
