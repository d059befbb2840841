// Package linuxtest boots Linux test guests for the kernel-integrity tests: the host's
// Debian kernel under TCG (KASLR on, 2 vCPUs) with a busybox initramfs that loads
// dmkit, the project's own test rootkit (dmkit/dmkit.c), built here against the
// kernel's Debian linux-headers package.
//
// The guest starts clean, with a process to hide, and loads dmkit only when the test
// says so (Infect), over a second serial port: one boot shows a guest before and
// after the rootkit.
//
// It also builds vmark (vmark/vmark.c), the virtual-scan tests' module, which the
// attribution and co-migration tests load into their own guests.
package linuxtest

import (
	"context"
	"embed"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/memscan/vmtest"
)

//go:embed dmkit/dmkit.c dmkit/Kbuild vmark/vmark.c vmark/Kbuild
var moduleSrc embed.FS

// BuildRootkit builds dmkit.ko for the kernel release (e.g. 6.1.0-57-amd64) in dir
// with the kernel's build tree from Debian's linux-headers-RELEASE, and returns its path.
func BuildRootkit(ctx context.Context, release, dir string) (string, error) {
	return buildOwn(ctx, release, dir, "dmkit")
}

// BuildVMark builds vmark.ko (vmark/vmark.c), the virtual-scan tests' module that
// writes a marker across a page boundary of its own memory whose two pages are not
// physically adjacent and prints where (see ParseVMark), like BuildRootkit.
func BuildVMark(ctx context.Context, release, dir string) (string, error) {
	return buildOwn(ctx, release, dir, "vmark")
}

// buildOwn builds one of this package's modules (name/name.c and name/Kbuild).
func buildOwn(ctx context.Context, release, dir, name string) (string, error) {
	files := map[string][]byte{}
	for _, f := range []string{name + ".c", "Kbuild"} {
		b, err := moduleSrc.ReadFile(name + "/" + f)
		if err != nil {
			return "", err
		}
		files[f] = b
	}
	return BuildModule(ctx, release, dir, name, files)
}

// BuildStatic compiles a test guest's C program (src) into a static binary at out,
// for a busybox initramfs without a C library.
func BuildStatic(src, out string) error {
	if _, err := exec.LookPath("gcc"); err != nil {
		return fmt.Errorf("gcc is needed to build the test guest's program %s (install gcc and libc6-dev)", src)
	}
	if b, err := exec.Command("gcc", "-static", "-O1", "-o", out, src).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc -static %s (install libc6-dev): %w\n%s", src, err, b)
	}
	return nil
}

// VMark is where vmark wrote its marker: the marker's virtual address and length, the
// frames of the two pages it spans, and the area ("module": vmark's own memory, or
// "vmalloc": pages it mapped there itself when its own came out contiguous).
type VMark struct {
	VA         uint64
	Len        int
	PFN0, PFN1 uint64
	In         string
}

// vmarkLine is vmark's report; it must end in a newline, so that a line read while
// the guest still writes it is not taken with a number cut short.
var vmarkLine = regexp.MustCompile(`VMARK va=([0-9a-f]+) len=(\d+) pfn0=([0-9a-f]+) pfn1=([0-9a-f]+) in=(\w+)\r?\n`)

// ParseVMark reads vmark's report from the guest's console output.
func ParseVMark(serial string) (VMark, error) {
	if strings.Contains(serial, "VMARK-ADJACENT") {
		return VMark{}, fmt.Errorf("vmark found no page boundary of its memory whose pages are apart")
	}
	k := vmarkLine.FindStringSubmatch(serial)
	if k == nil {
		return VMark{}, fmt.Errorf("no VMARK line from the test module")
	}
	var v VMark
	v.VA, _ = strconv.ParseUint(k[1], 16, 64)
	v.Len, _ = strconv.Atoi(k[2])
	v.PFN0, _ = strconv.ParseUint(k[3], 16, 64)
	v.PFN1, _ = strconv.ParseUint(k[4], 16, 64)
	v.In = k[5]
	return v, nil
}

// BuildModule builds the out-of-tree module name.ko from files (file name -> content,
// a Kbuild among them) in dir, for the kernel release, with the kernel's build tree
// from Debian's linux-headers-RELEASE, and returns its path.
func BuildModule(ctx context.Context, release, dir, name string, files map[string][]byte) (string, error) {
	kdir := filepath.Join("/lib/modules", release, "build")
	if _, err := os.Stat(filepath.Join(kdir, "Makefile")); err != nil {
		return "", fmt.Errorf("no kernel build tree for %s at %s (install linux-headers-%s, or linux-headers-amd64 with linux-image-amd64): %w", release, kdir, release, err)
	}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return "", err
		}
	}
	cmd := exec.CommandContext(ctx, "make", "-C", kdir, "M="+dir, "modules")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return filepath.Join(dir, name+".ko"), nil
}

// Guest is a running rootkit test guest.
type Guest struct {
	VM        *vmtest.VM
	Release   string
	HiddenPID int // the process dmkit hides (a sleep)
	ctl       string
}

// The guest's init: a process to hide, then dmkit when the test writes a line to
// ttyS1, then dmkit undoes itself when the test writes "undo". ttyS1 is opened once,
// before CLEAN-READY: opening the port resets the UART's FIFO, so a line the test
// wrote between CLEAN-READY and a later open was lost (the CI run at ed6bee0 waited 15
// minutes for ROOTKIT-LOADED).
const script = `
exec 3< /dev/ttyS1
sleep 100000 &
HP=$!
echo "HIDE-PID $HP"
echo CLEAN-READY
read x <&3
if ! insmod /dmkit.ko hide_pid=$HP hook_idt=1; then echo ROOTKIT-FAILED
elif grep -q '^dmkit ' /proc/modules; then echo ROOTKIT-LISTED
else echo ROOTKIT-LOADED; fi
while true; do
  read x <&3
  if [ "$x" = undo ]; then
    if echo 0 > /sys/module/dmkit/parameters/active && grep -q '^dmkit ' /proc/modules; then echo ROOTKIT-UNDONE
    else echo ROOTKIT-UNDO-FAILED; fi
  fi
done
`

// Boot builds dmkit and boots the guest (256 MiB, TCG, 2 vCPUs, KASLR on) until it
// is ready to be infected. The caller closes g.VM.
func Boot(ctx context.Context, dir string) (*Guest, error) {
	kernel, err := vmtest.Kernel()
	if err != nil {
		return nil, err
	}
	rel := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	ko, err := BuildRootkit(ctx, rel, dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(ko)
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := vmtest.BuildInitramfs(initrd, script, map[string][]byte{"dmkit.ko": b}); err != nil {
		return nil, err
	}
	g := &Guest{Release: rel, ctl: filepath.Join(dir, "ctl.sock")}
	g.VM, err = vmtest.Launch(ctx, vmtest.Config{
		Memory: 256 << 20, Kernel: kernel, Initrd: initrd, Accel: "tcg",
		// no_timer_check: under load the TCG guest fails the IO-APIC timer check and panics.
		Append:  "quiet panic=-1 no_timer_check",
		Timeout: 2 * time.Minute,
		Extra: []string{"-smp", "2",
			"-chardev", "socket,id=ctl,path=" + g.ctl + ",server=on,wait=off",
			"-device", "isa-serial,chardev=ctl"},
	})
	if err != nil {
		return nil, err
	}
	if err := g.VM.WaitSerial(ctx, "CLEAN-READY"); err != nil {
		g.VM.Close()
		return nil, fmt.Errorf("rootkit guest: %w\n%s", err, g.VM.Serial())
	}
	m := regexp.MustCompile(`HIDE-PID (\d+)`).FindStringSubmatch(g.VM.Serial())
	if m == nil {
		g.VM.Close()
		return nil, fmt.Errorf("rootkit guest printed no pid to hide:\n%s", g.VM.Serial())
	}
	g.HiddenPID, _ = strconv.Atoi(m[1])
	return g, nil
}

// Infect tells the guest to load dmkit and waits until it has (the guest keeps running).
func (g *Guest) Infect(ctx context.Context) error {
	return g.tell(ctx, "go", "ROOTKIT-LOADED", "ROOTKIT-FAILED", "ROOTKIT-LISTED")
}

// Undo tells dmkit to undo all it did (through its sysfs parameter) and waits until it
// has: the hooks restored, the task and dmkit itself back on their lists.
func (g *Guest) Undo(ctx context.Context) error {
	return g.tell(ctx, "undo", "ROOTKIT-UNDONE", "ROOTKIT-UNDO-FAILED")
}

// tell writes line to the guest's ttyS1 and waits for the console to say ok, or one of
// the failures.
func (g *Guest) tell(ctx context.Context, line, ok string, failures ...string) error {
	c, err := net.Dial("unix", g.ctl)
	if err != nil {
		return fmt.Errorf("guest control port: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return fmt.Errorf("guest control port: %w", err)
	}
	for {
		s := g.VM.Serial()
		for _, f := range failures {
			if strings.Contains(s, f) {
				return fmt.Errorf("guest said %s after %q:\n%s", f, line, s)
			}
		}
		if strings.Contains(s, ok) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s after %q: %w\n%s", ok, line, ctx.Err(), s)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
