// Package qemu starts QEMU processes and talks to them: the command line shared by
// every VM this project starts (Config.Args), a process in its own process group that
// is killed by group and dies with its parent (Process), the wait for its QMP monitor
// (Process.DialQMP), the accelerator probe (KVMUsable, CheckKVM, FirmwareAccel), and,
// in package qmp below, the QMP client.
//
// It is used by the memory tests' VMs (memscan/vmtest: initramfs, guest probes, reads of
// guest memory on top), by the migration coordinator's hosts (migrate-hooks/internal/host: a
// source or destination with its device model and RAM files on top) and by the image lab.
// It lives here, low in the tree, because all three start QEMU and none of them may
// import another: memscan must not import migrate-hooks, and domainm-migrate, which
// links this package, must link neither memscan nor appliance code. image/ holds the
// appliance's QEMU and Xen launch configs (DESIGN.md); the repository's top-level
// folders are fixed, so there is no module-root internal/. This package and qmp import
// only the standard library and use no cgo, which domainm-migrate requires.
//
// Process groups are a Linux (unix) notion: on other systems (proc_other.go) a process
// is started without them and killed by pid, so the module still builds and vets there.
package qemu

import (
	"fmt"
	"strings"
)

// Binary is the QEMU system emulator this project runs.
const Binary = "qemu-system-x86_64"

// Config is a VM's command line: machine, accelerator, RAM, QMP socket, serial console,
// an optional Linux kernel. Fields left empty add nothing.
type Config struct {
	Name        string // -name
	Machine     string // machine type, default "q35"; its RAM is the backend with id "ram"
	MachineOpts string // appended to -machine, e.g. ",nvdimm=on"
	Accel       string // "kvm" or "tcg"
	MemMiB      int    // guest RAM
	MemoryOpts  string // appended to -m, e.g. ",slots=1,maxmem=96M"
	// RAMFile backs guest RAM with a memory-backend-file (share=on when RAMShared, so
	// other processes see the guest's writes); empty: anonymous RAM.
	RAMFile   string
	RAMShared bool
	QMP       string // unix socket path of the QMP monitor (server, no wait)
	Serial    string // file receiving the serial console
	Kernel    string // Linux kernel: direct boot with Initrd and Append
	Initrd    string
	Append    string
	NoReboot  bool   // -no-reboot: a guest that reboots exits
	Paused    bool   // -S: CPUs stopped until cont
	Incoming  string // -incoming URI: a migration destination (started paused)
	Extra     []string
}

// Args returns the arguments after the program name.
func (c Config) Args() []string {
	machine := c.Machine
	if machine == "" {
		machine = "q35"
	}
	mem := fmt.Sprintf("%dM", c.MemMiB)
	var a []string
	if c.Name != "" {
		a = append(a, "-name", c.Name)
	}
	a = append(a, "-no-user-config", "-nodefaults", "-display", "none",
		"-machine", machine+",memory-backend=ram"+c.MachineOpts, "-accel", c.Accel,
		"-m", mem+c.MemoryOpts, "-smp", "1")
	if c.RAMFile != "" {
		share := "off"
		if c.RAMShared {
			share = "on"
		}
		a = append(a, "-object", fmt.Sprintf("memory-backend-file,id=ram,size=%s,mem-path=%s,share=%s", mem, c.RAMFile, share))
	} else {
		a = append(a, "-object", "memory-backend-ram,id=ram,size="+mem)
	}
	if c.QMP != "" {
		a = append(a, "-qmp", "unix:"+c.QMP+",server=on,wait=off")
	}
	if c.Serial != "" {
		a = append(a, "-serial", "file:"+c.Serial)
	}
	if c.NoReboot {
		a = append(a, "-no-reboot")
	}
	if c.Kernel != "" {
		a = append(a, "-kernel", c.Kernel)
		if c.Initrd != "" {
			a = append(a, "-initrd", c.Initrd)
		}
		if s := strings.TrimSpace(c.Append); s != "" {
			a = append(a, "-append", s)
		}
	}
	if c.Incoming != "" {
		a = append(a, "-incoming", c.Incoming)
	}
	if c.Paused || c.Incoming != "" {
		a = append(a, "-S")
	}
	return append(a, c.Extra...)
}
