// Package virttest runs libvirtd daemons as "hosts" on one machine, for tests: each in
// its own mount namespace with private /etc/libvirt, /run/libvirt, /var/lib/libvirt,
// /var/cache/libvirt and /var/log/libvirt folders (bind mounts of folders under Dir) and
// its own host_uuid, QEMU under it with stdio_handler "file", no security driver, no
// cgroups, no namespaces and a migration port range of its own. It needs no systemd.
package virttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Daemon is one libvirtd.
type Daemon struct {
	Name    string // "src", "dst"
	Dir     string // its private folders: etc, run, lib, cache, log
	UUID    string // host_uuid
	PortMin int    // migration ports PortMin..PortMin+19
	cmd     *exec.Cmd
}

// private maps each folder libvirt uses to its subfolder of Dir.
var private = [][2]string{
	{"etc", "/etc/libvirt"}, {"run", "/run/libvirt"}, {"lib", "/var/lib/libvirt"},
	{"cache", "/var/cache/libvirt"}, {"log", "/var/log/libvirt"},
}

// Start writes the configuration and starts libvirtd; it returns once the socket answers.
// hook, if not empty, is installed as /etc/libvirt/hooks/qemu (libvirt looks for hooks
// when it starts).
func Start(ctx context.Context, name, dir, uuid string, portMin int, hook string) (*Daemon, error) {
	if _, err := exec.LookPath("libvirtd"); err != nil {
		if _, err2 := os.Stat("/usr/sbin/libvirtd"); err2 != nil {
			return nil, fmt.Errorf("libvirtd not found (install libvirt-daemon-system and libvirt-daemon-driver-qemu): %w", err)
		}
	}
	d := &Daemon{Name: name, Dir: dir, UUID: uuid, PortMin: portMin}
	var script strings.Builder
	for _, p := range private {
		if err := os.MkdirAll(filepath.Join(dir, p[0]), 0o755); err != nil {
			return nil, err
		}
		// The mount point must exist outside (an empty /run/libvirt is created once).
		if err := os.MkdirAll(p[1], 0o755); err != nil {
			return nil, fmt.Errorf("mount point: %w", err)
		}
		fmt.Fprintf(&script, "mount --bind %s %s && ", filepath.Join(dir, p[0]), p[1])
	}
	files := map[string]string{
		"libvirtd.conf": fmt.Sprintf("host_uuid = %q\nlog_outputs = \"1:file:/var/log/libvirt/libvirtd.log\"\n"+
			"log_filters = \"1:qemu.qemu_migration 3:*\"\nmax_client_requests = 20\n", uuid),
		"qemu.conf": fmt.Sprintf("stdio_handler = \"file\"\nsecurity_driver = \"none\"\ncgroup_controllers = [ ]\n"+
			"namespaces = [ ]\nmigration_port_min = %d\nmigration_port_max = %d\nuser = \"root\"\ngroup = \"root\"\n", portMin, portMin+19),
		"libvirt.conf": "",
	}
	for f, s := range files {
		if err := os.WriteFile(filepath.Join(dir, "etc", f), []byte(s), 0o644); err != nil {
			return nil, err
		}
	}
	if hook != "" {
		if err := os.MkdirAll(filepath.Join(dir, "etc", "hooks"), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "etc", "hooks", "qemu"), []byte(hook), 0o755); err != nil {
			return nil, err
		}
	}
	script.WriteString("exec libvirtd -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid")
	d.cmd = exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script.String())
	d.cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := os.Create(filepath.Join(dir, "libvirtd.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	d.cmd.Stdout, d.cmd.Stderr = out, out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting libvirtd %s: %w", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	for {
		if c, err := net.Dial("unix", d.Socket()); err == nil {
			c.Close()
			return d, nil
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "log", "libvirtd.log"))
			return nil, fmt.Errorf("libvirtd %s exited (%v): %s", name, err, tail(b, 800))
		case <-ctx.Done():
			d.Stop()
			return nil, fmt.Errorf("libvirtd %s: socket %s: %w", name, d.Socket(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Socket is the daemon's RPC socket as seen from outside its namespace.
func (d *Daemon) Socket() string { return filepath.Join(d.Dir, "run", "libvirt-sock") }

// URI is its connection URI.
func (d *Daemon) URI() string { return "qemu+unix:///system?socket=" + d.Socket() }

// Outside turns a path as libvirt and its QEMUs see it (inside the namespace) into the
// same file's path outside.
func (d *Daemon) Outside(path string) string {
	for _, p := range private {
		if rest, ok := strings.CutPrefix(path, p[1]+"/"); ok {
			return filepath.Join(d.Dir, p[0], rest)
		}
	}
	return path
}

// QEMUPids are the pids of the daemon's QEMU processes (from libvirt's pid files).
func (d *Daemon) QEMUPids() map[string]int {
	out := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(d.Dir, "run", "qemu", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if pid, err2 := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && err2 == nil && pid > 1 {
			out[strings.TrimSuffix(filepath.Base(f), ".pid")] = pid
		}
	}
	return out
}

// Stop kills the daemon's QEMUs (by the pids libvirt recorded) and then the daemon (by
// its process group).
func (d *Daemon) Stop() error {
	var errs []error
	for name, pid := range d.QEMUPids() {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("qemu %s (%d): %w", name, pid, err))
		}
	}
	if d.cmd != nil && d.cmd.Process != nil {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	}
	return errors.Join(errs...)
}

// Log returns the end of libvirtd's log.
func (d *Daemon) Log(n int) string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "log", "libvirtd.log"))
	return tail(b, n)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
