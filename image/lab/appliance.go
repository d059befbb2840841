package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/image"
	"github.com/domainm/domainm/image/qemu"
	"github.com/domainm/domainm/migrate-hooks/control"
)

// Domain M in the loop is the appliance image as `make image` builds it (bin/image:
// systemd, dm-verity root, the shipped unit and rules), booted directly by QEMU with
// its configuration through fw_cfg (package image's Boot): opt/domainm/config
// (domainm.toml), opt/domainm/ca.pem (the lab's CA) and opt/domainm/nfs (the export,
// which the image's domainm-storage.service mounts read-only at /srv/storage).

// ImageStorage is where the image mounts the export; the target's disk image is
// ImageStorage/target.img there.
const ImageStorage = "/srv/storage"

// Console lines of the image (domainm-console-status.service, domainm-storage.service).
var (
	readyLine   = regexp.MustCompile(`domainm-ready: active running \d+`)
	storageLine = regexp.MustCompile(`domainm-storage: mounted \S+`)
)

// MakeImage runs `make image` in the repository (skipped by image/build.sh when its
// inputs are unchanged; the image tests share the build and its lock) and returns the
// output folder.
func MakeImage(ctx context.Context) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "make", "-C", root, "--no-print-directory", "image")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make image: %w\n%s", err, lastLines(out, 20))
	}
	return filepath.Join(root, "bin", "image"), nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// imageConfig is Domain M's domainm.toml: the nvdimm by its handle, the image on the
// storage mount, control on the virtio-serial port, alerts to a file on the state
// partition and to rsyslogd over TLS. The rules are the shipped ones (the lab's implant
// is a string domainm_demo_marker matches).
func imageConfig(syslogPort int) string {
	return fmt.Sprintf(`[target]
name = %q
uuid = %q
memory = %q
layout = "flat"
disk = %q
disk_format = "raw"

[memory]
interval = "10s"

[disk]
interval = "5s"

[control]
device = "/dev/virtio-ports/%s"

[[alerts.sink]]
name = "local"
type = "file"
path = "/var/lib/domainm/alerts.jsonl"

[[alerts.sink]]
name = "rsyslog"
type = "syslog"
transport = "tls"
address = "%s:%d"
ca_file = "/etc/domainm/ca.pem"
server_name = %q
backoff_max = "2s"
`, TargetName, TargetUUID, nvdimmSpec, ImageStorage+"/target.img", image.ControlPort, hostFromVM, syslogPort, ServerName)
}

// imageNFSConfig is the image's /etc/domainm/nfs: ganesha as the guest reaches it.
func imageNFSConfig(port int, pseudo string) string {
	return fmt.Sprintf("server = %s\nport = %d\nexport = %s\n", hostFromVM, port, pseudo)
}

// writeImageFiles writes the fw_cfg files of Domain M into dir and returns them by
// fw_cfg name.
func (l *Loop) writeImageFiles(dir string) (map[string]string, error) {
	if err := mkdirs(dir); err != nil {
		return nil, err
	}
	files := map[string]string{"config": filepath.Join(dir, "domainm.toml"), "ca.pem": l.pki.CA, "nfs": filepath.Join(dir, "nfs")}
	if err := os.WriteFile(files["config"], []byte(imageConfig(l.syslog.Port)), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(files["nfs"], []byte(imageNFSConfig(l.nfs.Port, l.nfs.Pseudo)), 0o600); err != nil {
		return nil, err
	}
	return files, nil
}

// copyImage copies the built image (bin/image) into dst for this run, holding
// build.sh's lock so that no build replaces it halfway, and checks the copy against its
// SHA256SUMS: the image's state partition is written at first boot (bin/image stays as
// built), source and destination QEMUs open the same copy, as hosts on shared storage
// do, and both boot the same kernel, initrd and root hash even if the image is rebuilt
// meanwhile (a shared tree's bin/domainm changes with every commit).
func copyImage(ctx context.Context, src, dst string) error {
	if err := mkdirs(dst); err != nil {
		return err
	}
	script := `set -e
cp --sparse=always "$1/disk.raw" "$2/disk.raw"
cp "$1/vmlinuz" "$1/initrd.img" "$1/cmdline" "$1/SHA256SUMS" "$2/"
cd "$2" && sha256sum --quiet -c SHA256SUMS`
	cmd := exec.CommandContext(ctx, "flock", src+".lock", "sh", "-c", script, "copy-image", src, dst)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("copying the image %s to %s: %w: %s", src, dst, err, out)
	}
	return nil
}

// dommMachine is Domain M booted from the image copied to dir (copyImage) on a host:
// the target's RAM file on that host as the nvdimm in slot 0 (handle 0x1), the control
// port's host end, a NIC.
func (l *Loop) dommMachine(files map[string]string, dir string) Machine {
	return Machine{Name: "domm", MemMiB: l.o.DomMMiB, Fill: true,
		Boot: func(h *Host) (qemu.Config, error) {
			return image.Boot{Dir: dir, Files: files, MemMiB: l.o.DomMMiB,
				TargetRAM: h.RAMFile("target"), TargetSlot: 0, Control: ctlSock(h), Net: true}.Config()
		}}
}

// status asks Domain M on h for its status over the control port (the connection is
// kept until releaseControl: the port's host end takes one client at a time).
func (l *Loop) status(ctx context.Context, h *Host) (proto.Response, error) {
	if l.ctl == nil || l.ctlHost != h {
		l.releaseControl()
		c, err := control.Dial(ctx, ctlSock(h))
		if err != nil {
			return proto.Response{}, err
		}
		l.ctl, l.ctlHost = c, h
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := l.ctl.Call(ctx, "status", nil)
	return r.Response, err
}

// releaseControl closes the lab's control connection (before the coordinator's).
func (l *Loop) releaseControl() {
	if l.ctl != nil {
		l.ctl.Close()
		l.ctl, l.ctlHost = nil, nil
	}
}

// statusOn is status for a wait condition: the answer's text, or the error's.
func (l *Loop) statusOn(ctx context.Context, h *Host) (proto.Response, string) {
	r, err := l.status(ctx, h)
	if err != nil {
		l.releaseControl()
		return r, "status: " + err.Error()
	}
	return r, statusText(r)
}

// waitReady waits for the image's console to show READY (domainm-console-status runs
// once domainm.service, Type=notify, is active) and the storage mounted.
func (l *Loop) waitReady(ctx context.Context) error {
	vm := l.srcVMs[1]
	booted := time.Now()
	if err := l.waitFor(ctx, 20*time.Minute, "Domain M's image to reach READY", func() (bool, string) {
		b, _ := os.ReadFile(vm.Serial)
		return readyLine.Match(b), lastConsoleLine(b)
	}); err != nil {
		return err
	}
	l.rep.BootToReady = time.Since(booted)
	b, _ := os.ReadFile(vm.Serial)
	fmt.Fprintf(l.o.Out, "           %s (boot to READY %.0f s)\n", readyLine.Find(b), l.rep.BootToReady.Seconds())
	if err := l.waitFor(ctx, 5*time.Minute, "the export mounted in Domain M", func() (bool, string) {
		b, _ := os.ReadFile(vm.Serial)
		return storageLine.Match(b), consoleTail(vm.Serial)
	}); err != nil {
		return err
	}
	b, _ = os.ReadFile(vm.Serial)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "domainm-storage: ") || strings.Contains(line, "domainm-nvdimm: ") || strings.Contains(line, "domainm-security: ") {
			fmt.Fprintf(l.o.Out, "           console: %s\n", strings.TrimSpace(line))
		}
	}
	return nil
}

// lastConsoleLine is the last non-empty line of a console, for the progress lines.
func lastConsoleLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(b), "\r", "")), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if s := strings.TrimSpace(lines[i]); s != "" {
			return "console: " + s
		}
	}
	return "console: (empty)"
}
