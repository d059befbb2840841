package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/domainm/domainm/image/ganesha"
	"github.com/domainm/domainm/image/qemu"
	"github.com/domainm/domainm/image/qemu/qmp"
)

// Host is a local "host" of the lab: a name, and a folder for its VMs' sockets,
// consoles and RAM files. Source and destination start each VM from the same Machine,
// so the device model matches, as migrate-hooks' hosts do.
type Host struct {
	Name, Dir string
	Prefix    string // of RAM file names in /dev/shm, unique per run
	vms       []*VM
}

// Machine is a VM's device model.
type Machine struct {
	Name   string
	MemMiB int
	Shared bool // RAM in a share=on file other processes map (the target); else private
	Fill   bool // pre-fill a source's RAM file with non-zero data (see Start)
	// Watch is the RAM file of the VM this one watches through an nvdimm (Domain M),
	// WatchMiB its size.
	Watch    func(h *Host) string
	WatchMiB int
	Initrd   string
	Kernel   string
	Extra    func(h *Host) []string // per-host arguments (sockets named per host)
	// Boot, if set, is the VM's configuration on h (the appliance image: package image's
	// Boot.Config); the host then sets only name, RAM file, monitor, console and
	// incoming URI, and Kernel, Initrd, Watch and Extra are not used.
	Boot func(h *Host) (qemu.Config, error)
	// NS, if set, is the network namespace the VM's QEMU runs in (the hosts' side of
	// the shared storage: an NFSv3 server and its rpcbind, ganesha.Namespace); its
	// sockets are unix sockets, reachable from anywhere.
	NS *ganesha.Namespace
}

// VM is a running QEMU of the lab.
type VM struct {
	Name, Host           string
	QMP, Serial, RAMFile string
	Proc                 *qemu.Process
	Mon                  *qmp.Monitor // nil once released for the coordinator
}

// RAMFile is where VM name keeps its RAM on h.
func (h *Host) RAMFile(name string) string {
	return filepath.Join("/dev/shm", h.Prefix+h.Name+"-"+name+".ram")
}

func (h *Host) file(name, ext string) string { return filepath.Join(h.Dir, h.Name+"-"+name+ext) }

// args is QEMU's command line for m on h; incoming "" for a source.
func (h *Host) args(m Machine, incoming string) ([]string, error) {
	if m.Boot != nil {
		c, err := m.Boot(h)
		if err != nil {
			return nil, fmt.Errorf("%s on %s: %w", m.Name, h.Name, err)
		}
		c.Name, c.MemMiB, c.RAMFile, c.RAMShared = m.Name, m.MemMiB, h.RAMFile(m.Name), m.Shared
		c.QMP, c.Serial, c.Incoming, c.NoReboot = h.file(m.Name, ".qmp"), h.file(m.Name, ".serial"), incoming, true
		return append([]string{qemu.Binary}, c.Args()...), nil
	}
	c := qemu.Config{Name: m.Name, Accel: "tcg", MemMiB: m.MemMiB, RAMFile: h.RAMFile(m.Name), RAMShared: m.Shared,
		QMP: h.file(m.Name, ".qmp"), Serial: h.file(m.Name, ".serial"), Incoming: incoming, NoReboot: true,
		Kernel: m.Kernel, Initrd: m.Initrd, Append: appendLine}
	if m.Watch != nil {
		// An nvdimm's guest-physical address is fixed by QEMU at startup, the same at
		// both ends, as x-ignore-shared requires (migrate-hooks/README.md).
		c.MachineOpts = ",nvdimm=on"
		c.MemoryOpts = fmt.Sprintf(",slots=1,maxmem=%dM", m.MemMiB+m.WatchMiB)
		c.Extra = append(c.Extra, "-object", fmt.Sprintf("memory-backend-file,id=watch,size=%dM,mem-path=%s,share=on", m.WatchMiB, m.Watch(h)),
			"-device", "nvdimm,memdev=watch,id=watch")
	}
	if m.Extra != nil {
		c.Extra = append(c.Extra, m.Extra(h)...)
	}
	return append([]string{qemu.Binary}, c.Args()...), nil
}

// Start starts m on h (paused, listening on incoming, for a destination) and connects
// to its monitor. A source's RAM is pre-filled with non-zero data first: QEMU sends a
// zero page as a few bytes, and an all-zero Domain M would escape the coordinator's
// pacing (migrate-hooks/README.md, P1).
func (h *Host) Start(ctx context.Context, m Machine, incoming string) (*VM, error) {
	if incoming == "" && m.Fill {
		if err := fillRAM(h.RAMFile(m.Name), int64(m.MemMiB)<<20); err != nil {
			return nil, err
		}
	}
	stderr, err := os.Create(h.file(m.Name, ".stderr"))
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	vm := &VM{Name: m.Name, Host: h.Name, QMP: h.file(m.Name, ".qmp"), Serial: h.file(m.Name, ".serial"), RAMFile: h.RAMFile(m.Name)}
	os.Remove(vm.QMP)
	args, err := h.args(m, incoming)
	if err != nil {
		return nil, err
	}
	if m.NS != nil {
		args = m.NS.Command(args...) // nsenter execs QEMU: the pid is QEMU's
	}
	// The command line, one argument a line, for whoever deploys the same (README).
	if err := os.WriteFile(h.file(m.Name, ".args"), []byte(strings.Join(args, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	if vm.Proc, err = qemu.Start(args, nil, stderr); err != nil {
		return nil, err
	}
	h.vms = append(h.vms, vm)
	if vm.Mon, err = vm.Proc.DialQMP(ctx, vm.QMP); err != nil {
		b, _ := os.ReadFile(stderr.Name())
		return nil, fmt.Errorf("%s on %s: %w; stderr: %s", m.Name, h.Name, err, b)
	}
	return vm, nil
}

// Release closes the monitor, for a coordinator that connects itself (a monitor
// serves one client at a time).
func (vm *VM) Release() {
	if vm.Mon != nil {
		vm.Mon.Close()
		vm.Mon = nil
	}
}

// Close kills every VM of h by process group and removes their RAM files.
func (h *Host) Close() {
	for _, vm := range h.vms {
		vm.Release()
		vm.Proc.Kill()
		os.Remove(vm.RAMFile)
	}
	h.vms = nil
}

// IncomingURI returns a fresh tcp: URI on 127.0.0.1 for a destination to listen on.
func IncomingURI() (string, error) {
	p, err := freePort()
	return fmt.Sprintf("tcp:127.0.0.1:%d", p), err
}

// fillRAM writes size bytes of non-zero pseudo-random data to path.
func fillRAM(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("filling RAM file: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	x := uint64(0x9e3779b97f4a7c15)
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := 0; i+8 <= len(buf); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(buf[i:], x|1)
		}
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			return fmt.Errorf("filling RAM file %s at %#x: %w", path, off, err)
		}
	}
	return nil
}
