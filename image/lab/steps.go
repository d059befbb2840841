package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/control/proto"
	"github.com/domainm/domainm/image/ganesha"
)

func (l *Loop) build(ctx context.Context) error {
	if err := mkdirs(l.o.Dir, l.o.BinDir); err != nil {
		return err
	}
	var err error
	if l.domainm, err = BuildDomainm(l.o.BinDir); err != nil {
		return err
	}
	if l.migrate, err = buildMigrate(l.o.BinDir); err != nil {
		return err
	}
	t, err := TargetGuest()
	if err != nil {
		return err
	}
	l.kernel = t.Kernel
	l.initrds[0] = l.path("target.cpio")
	if err := t.Build(l.initrds[0]); err != nil {
		return err
	}
	return nil // Domain M's initramfs needs the ports of rsyslogd and ganesha: startNFS
}

// buildMigrate builds domainm-migrate without cgo, as the package ships it.
func buildMigrate(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "domainm-migrate")
	cmd := exec.Command("go", "build", "-o", dst, "./migrate-hooks/cmd/domainm-migrate")
	cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v: %w: %s", cmd.Args, err, out)
	}
	return dst, nil
}

func (l *Loop) startSyslog(ctx context.Context) error {
	dir := l.path("rsyslog")
	if err := mkdirs(dir); err != nil {
		return err
	}
	var err error
	if l.pki, err = MakePKI(dir); err != nil {
		return err
	}
	l.syslog, err = StartRsyslog(ctx, dir, l.pki)
	if err == nil {
		fmt.Fprintf(l.o.Out, "           rsyslogd pid %d on 127.0.0.1:%d, alerts in %s\n", l.syslog.Pid(), l.syslog.Port, l.syslog.Out)
	}
	return err
}

func (l *Loop) startNFS(ctx context.Context) error {
	l.export = l.path("export")
	if err := mkdirs(l.export); err != nil {
		return err
	}
	if err := MakeTargetDisk(filepath.Join(l.export, "target.img"), 32); err != nil {
		return err
	}
	var err error
	l.nfs, err = ganesha.Start(ctx, ganesha.Config{Export: l.export, Dir: l.path("ganesha")})
	if err != nil {
		return err
	}
	fmt.Fprintf(l.o.Out, "           ganesha pid %d on %s exports %s as %s\n", l.nfs.Pid(), l.nfs.Addr, l.export, l.nfs.Pseudo)
	l.initrds[1] = l.path("domm.cpio")
	return l.buildDomM()
}

// buildDomM builds Domain M's initramfs: domainm watching the nvdimm and the image on
// the NFS mount, alerts to rsyslogd over TLS (and a file, for the console).
func (l *Loop) buildDomM() error {
	ca, err := os.ReadFile(l.pki.CA)
	if err != nil {
		return err
	}
	d := DomM{Domainm: l.domainm, NFSPort: l.nfs.Port, Pseudo: l.nfs.Pseudo,
		Rules:   map[string]string{"lab.yar": labRule},
		Modules: []string{"virtio_console", "nfit", "nd_pmem"},
		Setup:   controlPortScript,
		Config:  loopConfig(l.syslog.Port)}
	g, err := d.Guest()
	if err != nil {
		return err
	}
	g.Files["/etc/domainm/ca.pem"] = ca
	return g.Build(l.initrds[1])
}

// controlPortScript links the control port's device where the config expects it
// (busybox has no udev to make /dev/virtio-ports/NAME).
const controlPortScript = `mkdir -p /dev/virtio-ports
for i in 1 2 3 4 5 6 7 8 9 10; do
  for p in /sys/class/virtio-ports/*; do
    n=$(cat $p/name 2>/dev/null)
    [ -n "$n" ] && ln -sf /dev/$(basename $p) /dev/virtio-ports/$n
  done
  [ -e /dev/virtio-ports/org.domainm.control ] && break
  sleep 1
done
ls -l /dev/virtio-ports /dev/pmem* 2>&1 | sed 's/^/GUEST-DEV /'`

func loopConfig(syslogPort int) string {
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
[rules]
dir = %q
[state]
dir = %q
[control]
socket = %q
device = "/dev/virtio-ports/org.domainm.control"
[[alerts.sink]]
name = "console"
type = "file"
path = %q
[[alerts.sink]]
name = "rsyslog"
type = "syslog"
transport = "tls"
address = "%s:%d"
ca_file = "/etc/domainm/ca.pem"
server_name = %q
`, TargetName, TargetUUID, nvdimmSpec, GuestMount+"/target.img", GuestRules, GuestState, GuestSocket, GuestAlerts,
		hostFromVM, syslogPort, ServerName)
}

const appendLine = "console=ttyS0 quiet panic=-1 no_timer_check"

func (l *Loop) startSource(ctx context.Context) error {
	prefix := fmt.Sprintf("lab%d-", os.Getpid())
	hosts := l.path("hosts")
	if err := mkdirs(hosts); err != nil {
		return err
	}
	l.src = &Host{Name: "src", Dir: hosts, Prefix: prefix}
	l.dst = &Host{Name: "dst", Dir: hosts, Prefix: prefix}
	img := filepath.Join(l.export, "target.img")
	l.target = Machine{Name: "target", MemMiB: l.o.TargetMiB, Shared: true, Kernel: l.kernel, Initrd: l.initrds[0],
		Extra: func(h *Host) []string {
			return []string{"-drive", "if=none,id=disk,format=raw,file=" + img, "-device", "virtio-blk-pci,drive=disk",
				"-device", "virtio-serial-pci,id=vs",
				"-chardev", "socket,id=lab,server=on,wait=off,path=" + labSock(h),
				"-device", "virtserialport,chardev=lab,name=" + LabPort}
		}}
	l.domm = Machine{Name: "domm", MemMiB: l.o.DomMMiB, Fill: true, Kernel: l.kernel, Initrd: l.initrds[1],
		Watch: func(h *Host) string { return h.RAMFile("target") }, WatchMiB: l.o.TargetMiB,
		Extra: func(h *Host) []string {
			return []string{"-nic", "user,model=virtio-net-pci",
				"-device", "virtio-serial-pci,id=vs",
				"-chardev", "socket,id=ctl,server=on,wait=off,path=" + ctlSock(h),
				"-device", "virtserialport,chardev=ctl,name=org.domainm.control"}
		}}
	var err error
	if l.srcVMs[0], err = l.src.Start(ctx, l.target, ""); err != nil {
		return err
	}
	if l.srcVMs[1], err = l.src.Start(ctx, l.domm, ""); err != nil {
		return err
	}
	fmt.Fprintf(l.o.Out, "           target pid %d (RAM %s), Domain M pid %d\n", l.srcVMs[0].Proc.Pid, l.srcVMs[0].RAMFile, l.srcVMs[1].Proc.Pid)
	return nil
}

func labSock(h *Host) string { return filepath.Join(h.Dir, h.Name+"-target-lab.sock") }
func ctlSock(h *Host) string { return filepath.Join(h.Dir, h.Name+"-domm-ctl.sock") }

// console parses the Domain M console of vm.
func console(vm *VM) Console {
	b, _ := os.ReadFile(vm.Serial)
	return ParseConsole(string(b))
}

// waitFor polls cond every second until it holds or ctx ends (or limit passes).
func waitFor(ctx context.Context, limit time.Duration, what string, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		ok, state := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last seen: %s)", what, ctx.Err(), state)
		case <-time.After(time.Second):
		}
	}
}

func statusText(r proto.Response) string {
	s := fmt.Sprintf("state %q source %q disk checks %d", r.State, r.Source, r.DiskChecks)
	if r.Health != nil {
		var codes []string
		for _, p := range r.Health.Problems {
			codes = append(codes, p.Code+": "+p.Message)
		}
		s += fmt.Sprintf(" healthy %v problems [%s]", r.Health.Healthy, strings.Join(codes, "; "))
	}
	return s
}

func (l *Loop) waitMonitoring(ctx context.Context) error {
	return waitFor(ctx, 10*time.Minute, "Domain M monitoring with a baseline", func() (bool, string) {
		c := console(l.srcVMs[1])
		r := c.Last()
		ok := r.State == proto.StateMonitoring && r.DiskChecks >= 1 && healthyStatus(r) &&
			len(c.With("disk-baseline-created", "")) == 1
		return ok, statusText(r) + consoleTail(l.srcVMs[1].Serial)
	})
}

func healthyStatus(r proto.Response) bool { return r.Health != nil && r.Health.Healthy }

// consoleTail is the end of a console log, for errors.
func consoleTail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "\n    console: " + strings.Join(lines[max(0, len(lines)-8):], "\n    console: ")
}
