// Package vmtest starts small QEMU VMs for tests and demos: guest RAM in a shared
// memory-backend-file (so memscan can map it), a QMP socket for control, the serial
// console in a file, and optionally a Linux kernel with a busybox initramfs.
//
// It is the memory tests' layer over package image/qemu, which starts QEMU (own process
// group, killed with its parent), waits for its monitor, probes the accelerator and
// holds the QMP client (image/qemu/qmp) that the migration hosts (migrate-hooks/internal/host)
// and the image lab use as well. What is here is what memory tests need on top: guest
// RAM in a shared file, reads of guest-physical memory as QEMU sees it (ReadPhys),
// writes into the RAM file (WriteRAM), ELF core dumps, a busybox initramfs
// (BuildInitramfs) and the host's kernel (Kernel).
//
// Every QMP call is bounded by a context, so a hung QEMU cannot hang a test. Close kills
// the QEMU process group and removes the files the VM created; Start registers Close
// with t.Cleanup.
//
// Accelerator: on this project's lab machines /dev/kvm is nested KVM on which
// firmware-only guests run but a Linux kernel hangs early in boot, so with Accel ""
// a VM with a kernel uses TCG and a firmware-only VM tries KVM (checked with
// query-kvm and that the guest stays running) before falling back to TCG.
package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/domainm/domainm/image/qemu"
	"github.com/domainm/domainm/image/qemu/qmp"
)

// Config describes a VM.
type Config struct {
	Machine string // "q35" (default) or "pc"
	Memory  uint64 // guest RAM in bytes (default 128 MiB); a multiple of 1 MiB
	// RAMFile is the memory-backend-file path. Empty: a new file under /dev/shm,
	// removed by Close. QEMU creates the file sparse and does not touch its pages.
	RAMFile string
	Kernel  string // optional Linux kernel (bzImage)
	Initrd  string // optional initramfs
	Append  string // kernel command line; "console=ttyS0 no_timer_check" is always prepended
	Accel   string // "kvm", "tcg" or "" for $VMTEST_ACCEL or else detection (see package doc)
	// MachineOpts and MemoryOpts are appended to -machine and -m, for example
	// ",nvdimm=on" and ",slots=1,maxmem=512M" for a guest with an nvdimm in Extra.
	MachineOpts string
	MemoryOpts  string
	Paused      bool // start with -S (prelaunch; use Cont)
	Extra       []string
	// Timeout bounds each QMP command (default 30 s) and startup (default 30 s).
	Timeout time.Duration
	Logger  *slog.Logger // default: discard
}

// VM is a running QEMU process.
type VM struct {
	RAMFile    string // guest RAM backing file
	SerialFile string // serial console output
	QMPSocket  string
	Accel      string // accelerator in use: "kvm" or "tcg"
	Memory     uint64
	Machine    string

	cfg     Config
	dir     string // private directory for socket, serial and log
	ramDir  string // directory we created for RAMFile, or ""
	proc    *qemu.Process
	logFile string
	log     *slog.Logger

	mu  sync.Mutex // guards mon
	mon *qmp.Monitor
}

const defaultTimeout = 30 * time.Second

// Start launches a VM for a test, failing the test on error, and closes it in
// t.Cleanup.
func Start(t testing.TB, cfg Config) *VM {
	t.Helper()
	vm, err := Launch(context.Background(), cfg)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	t.Cleanup(func() {
		if err := vm.Close(); err != nil {
			t.Errorf("vmtest: closing VM: %v", err)
		}
	})
	return vm
}

// Launch starts a VM and connects to its QMP socket. The caller must Close it.
func Launch(ctx context.Context, cfg Config) (*VM, error) {
	if cfg.Machine == "" {
		cfg.Machine = "q35"
	}
	if cfg.Memory == 0 {
		cfg.Memory = 128 << 20
	}
	if cfg.Memory%(1<<20) != 0 {
		return nil, fmt.Errorf("memory %d is not a multiple of 1 MiB", cfg.Memory)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := exec.LookPath(qemu.Binary); err != nil {
		return nil, fmt.Errorf("%s not found (install qemu-system-x86): %w", qemu.Binary, err)
	}
	accel := cfg.Accel
	if accel == "" {
		accel = os.Getenv("VMTEST_ACCEL")
	}
	if accel == "" {
		accel = "tcg"
		if cfg.Kernel == "" && qemu.KVMUsable() {
			vm, err := launch(ctx, cfg, "kvm")
			if err == nil {
				if err = vm.checkKVM(ctx); err == nil {
					return vm, nil
				}
				vm.Close()
			}
			cfg.Logger.Info("KVM not usable for this guest, falling back to TCG", "err", err)
		}
	}
	return launch(ctx, cfg, accel)
}

func launch(ctx context.Context, cfg Config, accel string) (vm *VM, err error) {
	dir, err := os.MkdirTemp("", "vmtest-")
	if err != nil {
		return nil, err
	}
	vm = &VM{
		cfg: cfg, dir: dir, Accel: accel, Memory: cfg.Memory, Machine: cfg.Machine,
		SerialFile: filepath.Join(dir, "serial.log"),
		QMPSocket:  filepath.Join(dir, "qmp.sock"),
		logFile:    filepath.Join(dir, "qemu.log"),
		RAMFile:    cfg.RAMFile,
		log:        cfg.Logger.With("component", "vmtest"),
	}
	defer func() {
		if err != nil {
			vm.Close()
		}
	}()
	if vm.RAMFile == "" {
		shm := "/dev/shm"
		if fi, err := os.Stat(shm); err != nil || !fi.IsDir() {
			shm = "" // no tmpfs: the default temporary directory works, only slower
		}
		if vm.ramDir, err = os.MkdirTemp(shm, "vmtest-ram-"); err != nil {
			return vm, err
		}
		vm.RAMFile = filepath.Join(vm.ramDir, "ram")
	}
	logf, err := os.Create(vm.logFile)
	if err != nil {
		return vm, err
	}
	defer logf.Close()
	if vm.proc, err = qemu.Start(append([]string{qemu.Binary}, vm.args()...), logf, logf); err != nil {
		return vm, err
	}
	vm.log.Info("started QEMU", "pid", vm.proc.Pid, "accel", accel, "machine", cfg.Machine, "memory", cfg.Memory)
	if err := vm.connect(ctx); err != nil {
		return vm, err
	}
	return vm, nil
}

func (vm *VM) args() []string {
	c := qemu.Config{
		Machine: vm.cfg.Machine, MachineOpts: vm.cfg.MachineOpts, Accel: vm.Accel,
		MemMiB: int(vm.cfg.Memory >> 20), MemoryOpts: vm.cfg.MemoryOpts,
		RAMFile: vm.RAMFile, RAMShared: true, QMP: vm.QMPSocket, Serial: vm.SerialFile,
		NoReboot: true, Paused: vm.cfg.Paused, Extra: vm.cfg.Extra,
	}
	if vm.cfg.Kernel != "" {
		// no_timer_check: a TCG guest on a loaded host can fail the IO-APIC timer check
		// ("MP-BIOS bug: 8254 timer not connected") and hang or panic before init; a VM's
		// timer needs no such check. Tests that forgot it failed a CI rehearsal at load 27.
		c.Kernel, c.Initrd, c.Append = vm.cfg.Kernel, vm.cfg.Initrd, "console=ttyS0 no_timer_check "+vm.cfg.Append
	}
	return c.Args()
}

// connect waits for the QMP socket and performs the capabilities handshake.
func (vm *VM) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, vm.cfg.Timeout)
	defer cancel()
	mon, err := vm.proc.DialQMP(ctx, vm.QMPSocket)
	if errors.Is(err, qemu.ErrExited) {
		return fmt.Errorf("QEMU exited during startup (%v): %s", vm.proc.Err(), vm.Log())
	}
	if err != nil {
		return fmt.Errorf("connecting to QMP: %w; QEMU log: %s", err, vm.Log())
	}
	vm.mu.Lock()
	vm.mon = mon
	vm.mu.Unlock()
	return nil
}

// checkKVM verifies KVM is in use and the guest keeps running for a moment.
func (vm *VM) checkKVM(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, vm.cfg.Timeout)
	defer cancel()
	vm.mu.Lock()
	mon := vm.mon
	vm.mu.Unlock()
	if err := qemu.CheckKVM(ctx, mon, vm.proc.Exited(), vm.cfg.Paused); err != nil {
		return fmt.Errorf("%w; QEMU log: %s", err, vm.Log())
	}
	return nil
}

// Log returns QEMU's stdout and stderr so far.
func (vm *VM) Log() string {
	b, _ := os.ReadFile(vm.logFile)
	return strings.TrimSpace(string(b))
}

// Serial returns the serial console output so far.
func (vm *VM) Serial() string {
	b, _ := os.ReadFile(vm.SerialFile)
	return string(b)
}

// PID returns the QEMU process id.
func (vm *VM) PID() int {
	if vm.proc == nil {
		return 0
	}
	return vm.proc.Pid
}

// WaitSerial waits until the serial output contains s.
func (vm *VM) WaitSerial(ctx context.Context, s string) error {
	for {
		if strings.Contains(vm.Serial(), s) {
			return nil
		}
		select {
		case <-vm.proc.Exited():
			return fmt.Errorf("QEMU exited before %q on serial (%v); serial: %s; log: %s", s, vm.proc.Err(), tail(vm.Serial(), 2000), vm.Log())
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q on serial: %w; serial: %s", s, ctx.Err(), tail(vm.Serial(), 2000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// Close kills QEMU by process group and removes the VM's files (the RAM file too,
// unless Config.RAMFile named it).
func (vm *VM) Close() error {
	vm.mu.Lock()
	if vm.mon != nil {
		vm.mon.Close()
		vm.mon = nil
	}
	vm.mu.Unlock()
	var err error
	if vm.proc != nil {
		err = vm.proc.Kill()
	}
	if vm.ramDir != "" {
		os.RemoveAll(vm.ramDir)
	}
	if vm.dir != "" {
		os.RemoveAll(vm.dir)
	}
	return err
}

// QMPError is an error reply from QEMU, with its class and description.
type QMPError = qmp.Error

// Execute runs a QMP command with arguments args (nil for none) and decodes its
// "return" value into out (nil to ignore). It gives up after Config.Timeout or when ctx
// ends, whichever is first.
func (vm *VM) Execute(ctx context.Context, command string, args, out any) error {
	ctx, cancel := context.WithTimeout(ctx, vm.cfg.Timeout)
	defer cancel()
	return vm.execute(ctx, command, args, out)
}

func (vm *VM) execute(ctx context.Context, command string, args, out any) error {
	vm.mu.Lock()
	mon := vm.mon
	vm.mu.Unlock()
	if mon == nil {
		return fmt.Errorf("qmp %s: monitor not connected", command)
	}
	return mon.Execute(ctx, command, args, out)
}

// HMP runs a human-monitor command and returns its output.
func (vm *VM) HMP(ctx context.Context, cmd string) (string, error) {
	var out string
	err := vm.Execute(ctx, "human-monitor-command", map[string]string{"command-line": cmd}, &out)
	return out, err
}

// Status returns the run state from query-status ("running", "paused", ...).
func (vm *VM) Status(ctx context.Context) (string, error) {
	var st struct{ Status string }
	err := vm.Execute(ctx, "query-status", nil, &st)
	return st.Status, err
}

// Stop pauses the guest's CPUs.
func (vm *VM) Stop(ctx context.Context) error { return vm.Execute(ctx, "stop", nil, nil) }

// Cont resumes the guest's CPUs.
func (vm *VM) Cont(ctx context.Context) error { return vm.Execute(ctx, "cont", nil, nil) }

// DumpGuestMemory writes an ELF core of guest-physical memory (paging off, so
// PT_LOAD p_paddr are guest-physical addresses) to path. It waits for the dump to
// finish, bounded by ctx and a timeout scaled to the guest size.
func (vm *VM) DumpGuestMemory(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	timeout := vm.cfg.Timeout + time.Duration(vm.Memory>>20)*20*time.Millisecond
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return vm.execute(ctx, "dump-guest-memory", map[string]any{"paging": false, "protocol": "file:" + abs}, nil)
}

// ReadPhys reads n bytes of guest-physical memory at gpa as QEMU's memory system
// sees them (HMP "xp"), for checking other readers against the guest's view.
func (vm *VM) ReadPhys(ctx context.Context, gpa uint64, n int) ([]byte, error) {
	out := make([]byte, 0, n)
	for len(out) < n {
		// Chunks keep each HMP reply small (about 6 KiB of text per 1 KiB read).
		c := min(n-len(out), 1024)
		addr := gpa + uint64(len(out))
		s, err := vm.HMP(ctx, fmt.Sprintf("xp /%dbx %#x", c, addr))
		if err != nil {
			return nil, err
		}
		b, err := parseXP(s)
		if err != nil {
			return nil, fmt.Errorf("xp %#x: %w", addr, err)
		}
		if len(b) != c {
			return nil, fmt.Errorf("xp %#x: got %d bytes, want %d: %q", addr, len(b), c, s)
		}
		out = append(out, b...)
	}
	return out, nil
}

// ErrNotMemory is returned by ReadPhys when QEMU has no memory at an address
// (xp says "Cannot access memory"), e.g. in the PCI hole or past the end of RAM.
var ErrNotMemory = errors.New("no guest memory at this address")

// parseXP parses lines like "0000000000001000: 0x44 0x4f 0x4d".
func parseXP(s string) ([]byte, error) {
	var out []byte
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		addr, vals, ok := strings.Cut(line, ":")
		if ok && strings.Contains(vals, "Cannot access memory") {
			return nil, fmt.Errorf("xp at %s: %w", strings.TrimSpace(addr), ErrNotMemory)
		}
		if !ok {
			return nil, fmt.Errorf("unexpected xp output %q", line)
		}
		for _, f := range strings.Fields(vals) {
			var v uint8
			if _, err := fmt.Sscanf(f, "0x%x", &v); err != nil {
				return nil, fmt.Errorf("unexpected xp value %q in %q", f, line)
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// WriteRAM writes b into the RAM backing file at file offset off, as another process
// sharing the guest's memory would. The offset equals the GPA only below the machine's
// low-memory limit (see memscan.Layout). Callers usually Stop the guest first so that it
// does not overwrite the bytes.
func (vm *VM) WriteRAM(off int64, b []byte) error {
	f, err := os.OpenFile(vm.RAMFile, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return fmt.Errorf("writing RAM file at %#x: %w", off, err)
	}
	return f.Close()
}

// ErrNoKernel is returned by Kernel when /boot has no vmlinuz.
var ErrNoKernel = errors.New("no /boot/vmlinuz-* (install linux-image-amd64)")

// Kernel returns the newest /boot/vmlinuz-*.
func Kernel() (string, error) {
	m, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(m) == 0 {
		return "", ErrNoKernel
	}
	best := m[0]
	for _, p := range m[1:] {
		if bytes.Compare([]byte(p), []byte(best)) > 0 {
			best = p
		}
	}
	return best, nil
}
