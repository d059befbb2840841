// Package image is the appliance image as data: its recipe (build.sh, rootfs.sh,
// rootfs/, initramfs/), its units (systemd/) and default config (domainm.toml), and the
// QEMU configuration that boots a build directly (Boot.Config, on top of the project's
// one QEMU command-line builder, package image/qemu). The tests build the image, boot
// it under QEMU and watch its serial console, its control port and its alerts.
package image

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/domainm/domainm/image/qemu"
)

// ControlPort is the name of the virtio-serial port the supervisor answers the
// migration coordinator on: /dev/virtio-ports/org.domainm.control inside the VM.
const ControlPort = "org.domainm.control"

// Boot describes one direct boot of a built image (the output folder of build.sh).
type Boot struct {
	Dir      string // build output: vmlinuz, initrd.img, cmdline, disk.raw
	Disk     string // disk image; default Dir/disk.raw
	Snapshot bool   // writes go to a temporary overlay, the disk file stays as built
	Serial   string // file that receives the serial console
	// Console, if set, is a unix socket (QEMU listens, no wait) that is the serial
	// console's other end, as an operator's terminal: what is written to it reaches the
	// guest's ttyS0; everything the guest prints is still logged to Serial.
	Console string
	QMP     string // unix socket of the QMP monitor; "" for none
	// Files become fw_cfg entries opt/domainm/NAME (host file paths); the initramfs
	// copies "config" to /etc/domainm/domainm.toml and any other NAME to /etc/domainm/NAME.
	Files  map[string]string
	MemMiB int    // guest RAM; default 512
	Accel  string // "tcg" (default) or "kvm"
	Append string // extra kernel command line

	// TargetRAM is the target's RAM file (its memory-backend-file, share=on), shown to
	// Domain M as an nvdimm in slot TargetSlot: the guest kernel reports it under
	// /sys/bus/nd/devices/nmemN/nfit/handle as TargetSlot+1, which is the stable
	// identifier the supervisor's "nvdimm:handle=" source looks for. The mapping is
	// read-only for Domain M (readonly=on, unarmed=on). "" attaches no nvdimm.
	TargetRAM  string
	TargetSlot int
	// Control is the host end (a unix socket QEMU listens on) of the virtio-serial port
	// ControlPort; "" for none.
	Control string
	// Net gives the VM one virtio NIC on QEMU user networking (the guest reaches the
	// host's 127.0.0.1 as 10.0.2.2; nothing reaches the guest); false: no NIC.
	Net bool

	Extra []string
}

// Config returns the VM's QEMU configuration (program qemu.Binary). A Linux guest runs
// under TCG by default: on this project's lab machines a Debian kernel hangs early
// under the nested KVM (DESIGN.md, "Test lab"); set Accel to "kvm" where it boots.
func (b Boot) Config() (qemu.Config, error) {
	cmdline, err := os.ReadFile(filepath.Join(b.Dir, "cmdline"))
	if err != nil {
		return qemu.Config{}, fmt.Errorf("reading the image's kernel command line: %w", err)
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
	c := qemu.Config{
		Name: "domainm", Accel: accel, MemMiB: mem, QMP: b.QMP, Serial: b.Serial, NoReboot: true,
		Kernel: filepath.Join(b.Dir, "vmlinuz"), Initrd: filepath.Join(b.Dir, "initrd.img"),
		Append: strings.TrimSpace(strings.TrimSpace(string(cmdline)) + " " + b.Append),
	}
	var a []string
	if b.Console != "" {
		if b.Serial == "" {
			return qemu.Config{}, fmt.Errorf("a console socket needs a Serial file to log to")
		}
		c.Serial = ""
		a = append(a, "-chardev", "socket,id=console,path="+b.Console+",server=on,wait=off,logfile="+b.Serial,
			"-serial", "chardev:console")
	}
	drive := "if=none,id=disk,format=raw,file=" + disk
	if b.Snapshot {
		drive += ",snapshot=on"
	}
	a = append(a, "-drive", drive, "-device", "virtio-blk-pci,drive=disk")
	if b.TargetRAM != "" {
		fi, err := os.Stat(b.TargetRAM)
		if err != nil {
			return qemu.Config{}, fmt.Errorf("target RAM file: %w", err)
		}
		size := fi.Size()
		if size <= 0 || size%(2<<20) != 0 {
			return qemu.Config{}, fmt.Errorf("target RAM file %s: size %d is not a positive multiple of 2 MiB", b.TargetRAM, size)
		}
		// Room above RAM for the nvdimm: maxmem covers both, rounded up to 1 GiB.
		maxMiB := (int64(mem) + size>>20 + 1023) / 1024 * 1024
		c.MachineOpts = ",nvdimm=on"
		c.MemoryOpts = fmt.Sprintf(",slots=%d,maxmem=%dM", b.TargetSlot+1, maxMiB)
		a = append(a,
			"-object", fmt.Sprintf("memory-backend-file,id=target-ram,mem-path=%s,size=%d,share=on,readonly=on", b.TargetRAM, size),
			"-device", fmt.Sprintf("nvdimm,id=target-nvdimm,memdev=target-ram,slot=%d,unarmed=on", b.TargetSlot))
	}
	if b.Control != "" {
		a = append(a, "-device", "virtio-serial-pci,id=vser",
			"-chardev", "socket,id=control,path="+b.Control+",server=on,wait=off",
			"-device", "virtserialport,bus=vser.0,chardev=control,name="+ControlPort)
	}
	if b.Net {
		a = append(a, "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0")
	} else {
		a = append(a, "-nic", "none")
	}
	names := make([]string, 0, len(b.Files))
	for n := range b.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a = append(a, "-fw_cfg", "name=opt/domainm/"+n+",file="+b.Files[n])
	}
	c.Extra = append(a, b.Extra...)
	return c, nil
}

// Args returns the QEMU command line, program first.
func (b Boot) Args() ([]string, error) {
	c, err := b.Config()
	if err != nil {
		return nil, err
	}
	return append([]string{qemu.Binary}, c.Args()...), nil
}
