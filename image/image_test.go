package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/domainm/domainm/image/qemu"
)

// The image tests build the image with `make image` (skipped by build.sh when its inputs
// are unchanged) and boot it under QEMU; they need root (debootstrap, chroot) and fail,
// never skip, without it.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// built returns the output folder of `make image`, building it once per test binary;
// with IMAGE_DIR set, that folder instead (a build.sh output made elsewhere: a release's,
// or an older commit's to show what a test catches).
func built(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("IMAGE_DIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "SHA256SUMS")); err != nil {
			t.Fatalf("IMAGE_DIR=%s is not an image build: %v", d, err)
		}
		t.Logf("testing the image in IMAGE_DIR=%s, not make image's", d)
		return d
	}
	if os.Geteuid() != 0 {
		t.Fatal("the image build needs root (debootstrap, chroot); run make test as root")
	}
	buildOnce.Do(func() {
		repo := repoRoot(t)
		start := time.Now()
		out, err := exec.Command("make", "-C", repo, "--no-print-directory", "image").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("make image: %v\n%s", err, out)
			return
		}
		t.Logf("make image: %s\n%s", time.Since(start).Round(time.Second), lastLines(out, 3))
		buildDir = filepath.Join(repo, "bin", "image")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// vm is a booted image: its QEMU process (in its own process group, killed by group
// at cleanup) and its serial console file.
type vm struct {
	t      *testing.T
	p      *qemu.Process
	serial string
	start  time.Time
	exited <-chan struct{}
}

func boot(t *testing.T, b Boot) *vm {
	t.Helper()
	if b.Serial == "" {
		b.Serial = filepath.Join(t.TempDir(), "serial.log")
	}
	args, err := b.Args()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	p, err := qemu.Start(args, nil, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	v := &vm{t: t, p: p, serial: b.Serial, start: time.Now(), exited: p.Exited()}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("qemu %v\nstderr:\n%s\nserial console (last 60 lines):\n%s", args, stderr.String(), lastLines(v.console(), 60))
		}
	})
	return v
}

func (v *vm) console() []byte {
	b, _ := os.ReadFile(v.serial)
	return b
}

// wait polls the console until re matches (returning the match) or the timeout passes
// or QEMU exits.
func (v *vm) wait(re *regexp.Regexp, timeout time.Duration) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if m := re.FindSubmatch(v.console()); m != nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no %q on the console after %s", re, timeout)
		case <-v.exited:
			if m := re.FindSubmatch(v.console()); m != nil {
				return m, nil
			}
			return nil, fmt.Errorf("qemu exited (%v) before %q appeared on the console", v.p.Err(), re)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitAfter is wait for what the console printed after its first from bytes.
func (v *vm) waitAfter(from int, re *regexp.Regexp, timeout time.Duration) ([][]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		if c := v.console(); len(c) > from {
			if m := re.FindSubmatch(c[from:]); m != nil {
				return m, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %q on the console within %s", re, timeout)
		}
		select {
		case <-v.exited:
			return nil, fmt.Errorf("qemu exited (%v) before %q appeared on the console", v.p.Err(), re)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// shellPrompt is root's bash prompt in the image.
var shellPrompt = regexp.MustCompile(`root@domainm:[^\n]*# `)

// login does what an operator does at the serial console (its host end: the unix socket
// sock of Boot.Console): waits for the login prompt, logs in as root (no password: the
// console is reachable only from the host) and runs cmd; it returns the submatches of
// want in what cmd printed. want must not match cmd's own echo.
func (v *vm) login(t *testing.T, sock, cmd string, want *regexp.Regexp, timeout time.Duration) [][]byte {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the serial console's socket: %v", err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn) // the console log (Boot.Serial) has it all
	send := func(s string) {
		t.Helper()
		if _, err := io.WriteString(conn, s); err != nil {
			t.Fatalf("typing on the serial console: %v", err)
		}
	}
	start := time.Now()
	if _, err := v.wait(regexp.MustCompile(`(?m)^domainm login: `), timeout); err != nil {
		t.Fatalf("the serial console offers no login: %v", err)
	}
	t.Logf("serial console: login prompt %s after boot", time.Since(v.start).Round(time.Second))
	// Characters typed before agetty has set the line up may be lost: type the name
	// again until a shell answers.
	for try := 1; ; try++ {
		from := len(v.console())
		send("root\r")
		if _, err := v.waitAfter(from, shellPrompt, time.Minute); err == nil {
			break
		} else if try == 3 || time.Since(start) > timeout {
			t.Fatalf("logging in as root on the serial console: %v", err)
		}
	}
	from := len(v.console())
	send(cmd + "\r")
	m, err := v.waitAfter(from, want, 2*time.Minute)
	if err != nil {
		t.Fatalf("running %q on the serial console: %v", cmd, err)
	}
	send("exit\r")
	t.Logf("serial console: logged in as root and ran a command, %s after the prompt was awaited", time.Since(start).Round(time.Second))
	return m
}

// bootTimeout bounds a boot to READY under TCG on a loaded 2-core machine (4.5 min seen
// at load 18-25, with other VMs booting beside it).
const bootTimeout = 15 * time.Minute

// TestBootReady boots the image with a configuration passed through fw_cfg (naming a
// target whose memory is the nvdimm with handle 0x1, which this VM does not have) and
// waits until systemd reports domainm.service started (Type=notify: after READY=1) and
// the supervisor's own status, printed on the console, names that target, is waiting,
// and names the missing nvdimm (problem memory-source-missing).
func TestBootReady(t *testing.T) {
	t.Parallel() // each boot takes minutes under TCG: the VMs run side by side
	dir := built(t)
	cfg, err := os.ReadFile("domainm.toml")
	if err != nil {
		t.Fatal(err)
	}
	const name, uuid = "fwcfg-target-7f3a", "0e4a1c2b-3d5f-4a6b-8c7d-9e0f1a2b3c4d"
	cfg = regexp.MustCompile(`(?m)^name = ".*"$`).ReplaceAll(cfg, []byte(`name = "`+name+`"`))
	cfg = regexp.MustCompile(`(?m)^uuid = ".*"$`).ReplaceAll(cfg, []byte(`uuid = "`+uuid+`"`))
	// An nvdimm the VM is started without: the supervisor must say which one it waits for.
	const memory = `memory = "nvdimm:handle=0x1"`
	cfg = regexp.MustCompile(`(?m)^memory = ".*"$`).ReplaceAll(cfg, []byte(memory))
	if !bytes.Contains(cfg, []byte(name)) || !bytes.Contains(cfg, []byte(uuid)) || !bytes.Contains(cfg, []byte(memory)) {
		t.Fatal("could not set target name, uuid and memory in domainm.toml")
	}
	cfgFile := filepath.Join(t.TempDir(), "domainm.toml")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "console.sock")
	v := boot(t, Boot{Dir: dir, Snapshot: true, Files: map[string]string{"config": cfgFile},
		Serial: filepath.Join(tmp, "serial.log"), Console: sock})

	if _, err := v.wait(regexp.MustCompile(`domainm-init: root verified and mounted read-only`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("root verified: %s", time.Since(v.start).Round(time.Second))
	if _, err := v.wait(regexp.MustCompile(`domainm-init: fw_cfg opt/domainm/config -> /etc/domainm/domainm.toml`), time.Minute); err != nil {
		t.Fatal(err)
	}
	// systemd's "Started domainm.service" stops reaching the console once the serial
	// getty runs there; domainm-console-status.service (After=domainm.service, so after
	// READY=1) prints systemd's view of the unit instead.
	if _, err := v.wait(regexp.MustCompile(`domainm-ready: active running \d+`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("boot to READY (domainm.service active, running): %s", time.Since(v.start).Round(time.Second))
	m, err := v.wait(regexp.MustCompile(`domainm-status: rc=(\d) ([^\r\n]*)\r?\n`), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// domainm status indents its JSON: compare without the blanks after colons.
	status := regexp.MustCompile(`":\s+`).ReplaceAllString(string(m[2]), `":`)
	t.Logf("domainm status (rc %s): %.400s", m[1], status)
	for _, want := range []string{name, uuid, `"state":"waiting"`, `"code":"memory-source-missing"`,
		"no nvdimm with NFIT handle 0x1 (QEMU -device nvdimm,slot=0)", "present: none"} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %s: %s", want, status)
		}
	}
	if !bytes.Contains(v.console(), []byte("state partition /dev/vda3 is blank: making ext4 DOMAINM-STATE")) {
		t.Error("the blank state partition was not made on first boot")
	}

	// The operator's only way in is the serial console: it must offer a login that
	// gives root a shell. At load ~28 dev-ttyS0.device once failed after systemd's
	// 1 min 31 s device timeout and took the getty with it (no prompt until a reboot);
	// the image's getty is not bound to the device (/dev/ttyS0 is in devtmpfs from the
	// kernel's 8250 driver) and the device timeout is 10 min. Checked from that shell:
	// the getty active, no .device among its dependencies, the manager's device timeout.
	m = v.login(t, sock, `dmesg -n 1; echo "domainm-console: $((6*7)) $(systemctl is-active serial-getty@ttyS0.service)`+
		` devdeps=$(systemctl show -p BindsTo -p Requires -p After --value serial-getty@ttyS0.service | tr ' ' '\n' | grep -c '[.]device$')`+
		` device-timeout=$(systemctl show -p DefaultDeviceTimeoutUSec --value)`+
		` vts=$(systemctl list-units --plain --no-legend 'getty@*' 'autovt@*' | wc -l) end"`,
		regexp.MustCompile(`domainm-console: 42 (\S+) devdeps=(\d+) device-timeout=(.*?) vts=(\d+) end`), 5*time.Minute)
	t.Logf("from root's shell on the serial console: serial-getty@ttyS0 %s, %s device dependencies, DefaultDeviceTimeoutUSec=%s, %s getty units on virtual consoles", m[1], m[2], m[3], m[4])
	if string(m[1]) != "active" || string(m[2]) != "0" || string(m[3]) != "10min" {
		t.Errorf("serial-getty@ttyS0.service is %s with %s .device dependencies and the device timeout is %s; want active, 0, 10min", m[1], m[2], m[3])
	}
	// The VM has no display: a getty on tty1-6 is a process nobody can reach.
	if string(m[4]) != "0" {
		t.Errorf("%s getty units run on virtual consoles (tty1-6); the appliance has no display", m[4])
	}
	if bytes.Contains(v.console(), []byte("FAILED")) {
		t.Errorf("a unit failed during boot:\n%s", grepLines(v.console(), "FAILED"))
	}
	if bytes.Contains(v.console(), []byte("Timed out waiting for device")) {
		t.Errorf("a device timed out during boot:\n%s", grepLines(v.console(), "Timed out"))
	}
}

func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestTamperedRootFails flips one byte in the middle of the root filesystem (a copy of
// the disk) and checks the boot stops at the initramfs with a verity error on the console
// and never reaches systemd.
func TestTamperedRootFails(t *testing.T) {
	t.Parallel() // each boot takes minutes under TCG: the VMs run side by side
	dir := built(t)
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if out, err := exec.Command("cp", "--sparse=always", filepath.Join(dir, "disk.raw"), disk).CombinedOutput(); err != nil {
		t.Fatalf("copying the disk: %v\n%s", err, out)
	}
	start, size := partition(t, disk, "DOMAINM-ROOT")
	off := start + size/2
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped bit 0 of byte %d (root partition %d+%d)", off, start, size)

	v := boot(t, Boot{Dir: dir, Disk: disk})
	if _, err := v.wait(regexp.MustCompile(`domainm-init: FATAL: verity: root filesystem \S+ does not match root hash`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.exited:
	case <-time.After(time.Minute):
		t.Error("the VM did not power off after the verity failure")
	}
	if c := v.console(); bytes.Contains(c, []byte("systemd")) && bytes.Contains(c, []byte("Started ")) {
		t.Error("systemd started units on a tampered root")
	}
	t.Logf("verity failure shown:\n%s", grepLines(v.console(), "erif"))
}

// partition returns the byte offset and size of the GPT partition called name.
func partition(t *testing.T, disk, name string) (int64, int64) {
	t.Helper()
	out, err := exec.Command("sfdisk", "--dump", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v", err)
	}
	re := regexp.MustCompile(`start=\s*(\d+), size=\s*(\d+),.*name="` + regexp.QuoteMeta(name) + `"`)
	m := re.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no partition %s in:\n%s", name, out)
	}
	var start, size int64
	fmt.Sscan(string(m[1]), &start)
	fmt.Sscan(string(m[2]), &size)
	return start * 512, size * 512
}
