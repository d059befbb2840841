// Package host starts and stops the QEMU processes of a local "host": a source or a
// destination of a co-migration on this machine.
//
// A Local host keeps its VMs' RAM files in a shared-memory directory, optionally runs its
// QEMU processes inside a network namespace (so that two hosts can be joined by a shaped
// veth link), and kills every process it started, by process group, on Close.
//
// This package is the migration host model only: device model (Machine), RAM file names,
// incoming URIs, the adaptor to the coordinator's hypervisor operations. Starting QEMU,
// waiting for its monitor, killing it and probing the accelerator are package
// image/qemu's, shared with the memory tests' VMs (memscan/vmtest) and the image lab.
//
// Device model. Source and destination start a VM from the same Machine, so the device
// model matches. A target keeps its RAM in a shared file (memory-backend-file, share=on);
// Domain M sees that file through a device backed by it. Domain M's migration must then
// run with the x-ignore-shared capability, which makes QEMU 7.2 skip every RAM block that
// is mapped shared (ramblock_is_ignored): the watched RAM is not copied through Domain M's
// stream, while Domain M's own RAM (a private mapping) is. At the destination the device
// is backed by the destination target's RAM file, which the target's own migration fills.
//
// x-ignore-shared also requires each skipped block to sit at the same guest-physical
// address at both ends, and the destination checks that before it has loaded any device
// state. An ivshmem-plain BAR is placed by the guest's firmware at boot, so at an
// incoming destination it is still unmapped: QEMU 7.2 fails with "Mismatched GPAs for
// block .../watch 4026531840!= 0" for any Domain M that has booted far enough to map its
// BARs. (It needs master=on as well, else migration is blocked outright: "peer mode".)
// An nvdimm's address is assigned by QEMU itself at startup, the same at both ends, so
// WatchDevice "nvdimm" co-migrates; Linux in Domain M reads it as /dev/pmemN. Copying the
// view through Domain M's stream instead (no x-ignore-shared) would write stale target
// pages into the destination target's RAM while the target's own migration fills it.
package host

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/domainm/domainm/image/qemu"
	"github.com/domainm/domainm/image/qemu/qmp"
)

// Machine is a VM's device model and boot configuration.
type Machine struct {
	Name   string // VM name, unique per host
	MemMiB int
	Accel  string // "kvm" or "tcg"
	// RAM: "shared" (a share=on file other processes can map: the target), "private"
	// (a file mapped privately, so it can be pre-filled and is still migrated: Domain M in
	// benchmarks) or "" (anonymous RAM).
	RAM string
	// Kernel, Initrd and Append boot a Linux guest; empty for a firmware-only guest.
	Kernel, Initrd, Append string
	// Watch names the VM on the same host whose shared RAM file this VM (Domain M) sees
	// through an ivshmem-plain device; WatchMiB is that VM's RAM size.
	Watch    string
	WatchMiB int
	// WatchDevice is how the watched RAM appears: "ivshmem" (default, PCI BAR2) or
	// "nvdimm" (a persistent-memory DIMM, /dev/pmemN in a Linux guest).
	WatchDevice string
	// Fill pre-fills a source VM's RAM file with non-zero data, as a long-running guest's
	// RAM would be. (QEMU sends a zero page as a few bytes, so an empty guest migrates
	// unrealistically fast, and max-bandwidth does not pace it.)
	Fill bool
}

// Local is a host on this machine.
type Local struct {
	Name   string // "src", "dst"; part of file names
	Dir    string // sockets and logs
	ShmDir string // RAM files; default /dev/shm
	Prefix string // prefix of RAM file names, unique per run
	NetNS  string // run QEMU in this network namespace if set
	Addr   string // address migration streams reach this host on; default 127.0.0.1
	QEMU   string // default qemu-system-x86_64
	Log    *slog.Logger

	mu  sync.Mutex
	vms []*VM
}

// VM is a running QEMU process and its monitor.
type VM struct {
	Name    string
	Host    string
	Pid     int
	Mon     *qmp.Monitor
	RAMFile string // "" for anonymous RAM
	Serial  string // serial console log
	Argv    []string

	proc   *qemu.Process // nil for a VM this program did not start (Attach)
	exited <-chan struct{}
	once   sync.Once
}

func (h *Local) shmDir() string {
	if h.ShmDir != "" {
		return h.ShmDir
	}
	return "/dev/shm"
}

func (h *Local) addr() string {
	if h.Addr != "" {
		return h.Addr
	}
	return "127.0.0.1"
}

func (h *Local) logger() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.New(slog.DiscardHandler)
}

// RAMFile is where VM name keeps its RAM on this host.
func (h *Local) RAMFile(name string) string {
	return filepath.Join(h.shmDir(), fmt.Sprintf("%s%s-%s.ram", h.Prefix, h.Name, name))
}

// IncomingURI returns a fresh tcp: URI on this host for a destination VM to listen on.
func (h *Local) IncomingURI() (string, error) {
	if h.NetNS == "" {
		l, err := net.Listen("tcp", net.JoinHostPort(h.addr(), "0"))
		if err != nil {
			return "", fmt.Errorf("picking a port on %s: %w", h.addr(), err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		return fmt.Sprintf("tcp:%s:%d", h.addr(), port), nil
	}
	// Inside a namespace this process cannot bind; the namespace's address is ours alone.
	h.mu.Lock()
	port := 40000 + len(h.vms)
	h.mu.Unlock()
	return fmt.Sprintf("tcp:%s:%d", h.addr(), port), nil
}

// Args returns QEMU's command line for m; incoming is "" for a source VM, or the URI a
// destination VM listens on (it is then started paused with -S).
func (h *Local) Args(m Machine, incoming string) []string {
	c := qemu.Config{Name: m.Name, Accel: m.Accel, MemMiB: m.MemMiB,
		QMP: h.qmpPath(m.Name), Serial: h.serialPath(m.Name), Incoming: incoming}
	if m.RAM == "shared" || m.RAM == "private" {
		c.RAMFile, c.RAMShared = h.RAMFile(m.Name), m.RAM == "shared"
	}
	if m.Watch != "" {
		c.Extra = append(c.Extra, "-object", fmt.Sprintf("memory-backend-file,id=watch,size=%dM,mem-path=%s,share=on", m.WatchMiB, h.RAMFile(m.Watch)))
		switch m.WatchDevice {
		case "nvdimm":
			// A DIMM's guest-physical address is fixed by QEMU at startup, identical at
			// both ends, which x-ignore-shared requires (see the package comment).
			c.MachineOpts = ",nvdimm=on"
			c.MemoryOpts = fmt.Sprintf(",slots=1,maxmem=%dM", m.MemMiB+m.WatchMiB)
			c.Extra = append(c.Extra, "-device", "nvdimm,memdev=watch,id=watch")
		default:
			c.Extra = append(c.Extra, "-device", "ivshmem-plain,memdev=watch,id=watch,master=on")
		}
	}
	if m.Kernel != "" {
		c.Kernel, c.Initrd, c.Append = m.Kernel, m.Initrd, m.Append
	}
	return c.Args()
}

func (h *Local) qmpPath(name string) string { return filepath.Join(h.Dir, h.Name+"-"+name+".qmp") }
func (h *Local) serialPath(name string) string {
	return filepath.Join(h.Dir, h.Name+"-"+name+".serial")
}

// Start starts QEMU for m and connects to its monitor. incoming is as for Args.
func (h *Local) Start(ctx context.Context, m Machine, incoming string) (*VM, error) {
	if m.Accel == "" {
		return nil, fmt.Errorf("starting %s on %s: no accelerator chosen", m.Name, h.Name)
	}
	bin := h.QEMU
	if bin == "" {
		bin = qemu.Binary
	}
	argv := append([]string{bin}, h.Args(m, incoming)...)
	if h.NetNS != "" {
		// ip netns exec execs QEMU itself, so the pid is QEMU's.
		argv = append([]string{"ip", "netns", "exec", h.NetNS}, argv...)
	}
	os.Remove(h.qmpPath(m.Name))
	if m.Fill && incoming == "" && m.RAM != "" {
		if err := fillRAM(h.RAMFile(m.Name), int64(m.MemMiB)<<20); err != nil {
			return nil, fmt.Errorf("starting %s on %s: %w", m.Name, h.Name, err)
		}
	}
	stderr, err := os.Create(filepath.Join(h.Dir, h.Name+"-"+m.Name+".stderr"))
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	// qemu.Start: own process group (a signal to the coordinator's terminal does not
	// reach QEMU before the coordinator has decided what to do with the pair), and a
	// coordinator (or test binary) that dies takes its QEMUs with it.
	p, err := qemu.Start(argv, nil, stderr)
	if err != nil {
		return nil, fmt.Errorf("starting %s on %s: %w", m.Name, h.Name, err)
	}
	vm := &VM{Name: m.Name, Host: h.Name, Pid: p.Pid, Serial: h.serialPath(m.Name),
		Argv: argv, proc: p, exited: p.Exited()}
	if m.RAM != "" {
		vm.RAMFile = h.RAMFile(m.Name)
	}
	h.mu.Lock()
	h.vms = append(h.vms, vm)
	h.mu.Unlock()
	h.logger().Info("qemu started", "host", h.Name, "vm", m.Name, "pid", vm.Pid, "incoming", incoming)

	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	mon, err := p.DialQMP(dctx, h.qmpPath(m.Name))
	if err != nil {
		vm.Kill()
		b, _ := os.ReadFile(stderr.Name())
		return nil, fmt.Errorf("starting %s on %s (%s): %w; stderr: %s", m.Name, h.Name, strings.Join(argv, " "), err, lastLines(b, 5))
	}
	vm.Mon = mon
	return vm, nil
}

// Exited is closed when the QEMU process has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// Kill kills QEMU's process group (SIGKILL) and waits for it; it is idempotent.
func (vm *VM) Kill() {
	vm.once.Do(func() {
		if vm.proc != nil {
			vm.proc.Kill()
		}
		if vm.Mon != nil {
			vm.Mon.Close()
		}
	})
}

// Close kills every VM this host started and removes their RAM files.
func (h *Local) Close() {
	h.mu.Lock()
	vms := h.vms
	h.vms = nil
	h.mu.Unlock()
	for _, vm := range vms {
		vm.Kill()
		if vm.RAMFile != "" {
			os.Remove(vm.RAMFile)
		}
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Attach connects to the monitor of a QEMU this program did not start (an operator's or
// libvirt's); host and name only label it. Kill then only closes the monitor.
//
// A QEMU monitor socket serves one client at a time: a second client is accepted by the
// kernel but never greeted, hence the bound on the dial.
func Attach(ctx context.Context, qmpPath, host, name string) (*VM, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	mon, err := qmp.Dial(ctx, qmpPath)
	if err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	close(exited)
	return &VM{Name: name, Host: host, Mon: mon, exited: exited}, nil
}
