package lab

import (
	"context"
	"encoding/json"
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
	t0 := time.Now()
	if l.image, err = MakeImage(ctx); err != nil {
		return err
	}
	fmt.Fprintf(l.o.Out, "           make image: %.0f s (%s)\n", time.Since(t0).Seconds(), l.image)
	if l.migrate, err = buildMigrate(l.o.BinDir); err != nil {
		return err
	}
	t, err := TargetGuest()
	if err != nil {
		return err
	}
	l.kernel = t.Kernel
	l.initrds[0] = l.path("target.cpio")
	return t.Build(l.initrds[0])
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
	// The hosts' QEMUs open the target's disk over NFS as a hypervisor on shared storage
	// does: QEMU's nfs:// driver (libnfs) speaks NFSv3 and finds MOUNT and NFS through
	// the portmapper on port 111, so this server and its rpcbind run in a network
	// namespace of the lab's (only its loopback), and so do the targets' QEMUs.
	hostsDir := l.path("ganesha-hosts")
	if err := mkdirs(hostsDir); err != nil {
		return err
	}
	if l.ns, err = ganesha.StartNamespace(ctx, hostsDir); err != nil {
		return err
	}
	if l.hostsNFS, err = ganesha.Start(ctx, ganesha.Config{Export: l.export, Dir: hostsDir, Namespace: l.ns, Version3: true, Writable: true}); err != nil {
		return err
	}
	fmt.Fprintf(l.o.Out, "           ganesha pid %d (NFSv3, read-write) and rpcbind pid %d in the hosts' namespace: the targets open %s\n",
		l.hostsNFS.Pid(), l.ns.Pid(), l.hostsNFS.URL("target.img"))
	return nil
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
	disk := l.hostsNFS.URL("target.img")
	l.target = Machine{Name: "target", MemMiB: l.o.TargetMiB, Shared: true, Kernel: l.kernel, Initrd: l.initrds[0], NS: l.ns,
		Extra: func(h *Host) []string {
			return []string{"-drive", "if=none,id=disk,format=raw,file=" + disk, "-device", "virtio-blk-pci,drive=disk",
				"-device", "virtio-serial-pci,id=vs",
				"-chardev", "socket,id=lab,server=on,wait=off,path=" + labSock(h),
				"-device", "virtserialport,chardev=lab,name=" + LabPort}
		}}
	files, err := l.writeImageFiles(l.path("domm"))
	if err != nil {
		return err
	}
	img := l.path("domm/image")
	if err := copyImage(ctx, l.image, img); err != nil {
		return err
	}
	l.domm = l.dommMachine(files, img)
	if l.srcVMs[0], err = l.src.Start(ctx, l.target, ""); err != nil {
		return err
	}
	if err := diskOverNFS(ctx, l.srcVMs[0], disk); err != nil {
		return err
	}
	fmt.Fprintf(l.o.Out, "           the target's QEMU has its disk as a block node of driver nfs: %s\n", disk)
	if l.srcVMs[1], err = l.src.Start(ctx, l.domm, ""); err != nil {
		return err
	}
	fmt.Fprintf(l.o.Out, "           target pid %d (RAM %s), Domain M pid %d (image %s, fw_cfg %s)\n",
		l.srcVMs[0].Proc.Pid, l.srcVMs[0].RAMFile, l.srcVMs[1].Proc.Pid, img, l.path("domm"))
	return nil
}

// diskOverNFS checks that vm's QEMU opened url with its nfs block driver (a block node
// whose driver is "nfs"), not a file.
func diskOverNFS(ctx context.Context, vm *VM, url string) error {
	var nodes []struct {
		Drv  string `json:"drv"`
		File string `json:"file"`
	}
	if err := vm.Mon.Execute(ctx, "query-named-block-nodes", nil, &nodes); err != nil {
		return err
	}
	for _, n := range nodes {
		if n.Drv == "nfs" && n.File == url {
			return nil
		}
	}
	return fmt.Errorf("%s on %s: no block node with driver nfs for %s: %+v", vm.Name, vm.Host, url, nodes)
}

func labSock(h *Host) string { return filepath.Join(h.Dir, h.Name+"-target-lab.sock") }
func ctlSock(h *Host) string { return filepath.Join(h.Dir, h.Name+"-domm-ctl.sock") }

// waitFor polls cond every second until it holds or ctx ends (or limit passes),
// printing the state cond reports every 30 s (the timeline's progress).
func (l *Loop) waitFor(ctx context.Context, limit time.Duration, what string, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start, said := time.Now(), time.Now()
	for {
		ok, state := cond()
		if ok {
			return nil
		}
		if err := l.vmsExited(); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if time.Since(said) >= 30*time.Second {
			said = time.Now()
			fmt.Fprintf(l.o.Out, "[%6.1fs]   waiting %.0f s for %s: %s\n", time.Since(l.start).Seconds(), time.Since(start).Seconds(), what, oneLine(state))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last seen: %s)", what, ctx.Err(), state)
		case <-time.After(time.Second):
		}
	}
}

// vmsExited says which VM that should be running has exited (a guest that panics
// exits: panic=-1 and -no-reboot), with the end of its console: the sources until the
// co-migration ended, the destinations after.
func (l *Loop) vmsExited() error {
	vms := l.srcVMs
	if l.rep.Migration.Total != nil {
		vms = l.dstVMs
	}
	for _, vm := range vms {
		if vm == nil {
			continue
		}
		select {
		case <-vm.Proc.Exited():
			return fmt.Errorf("the QEMU of %s on %s exited (%v)%s", vm.Name, vm.Host, vm.Proc.Err(), consoleTail(vm.Serial))
		default:
		}
	}
	return nil
}

// oneLine is s on one line, printable, at most 200 characters.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
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
	if err := l.waitReady(ctx); err != nil {
		return err
	}
	if err := l.waitFor(ctx, 10*time.Minute, "Domain M monitoring with a baseline", func() (bool, string) {
		r, state := l.statusOn(ctx, l.src)
		ok := r.State == proto.StateMonitoring && r.DiskChecks >= 1 && healthyStatus(r) && l.received("disk-baseline-created", "", "")
		return ok, state
	}); err != nil {
		return err
	}
	return l.statusCLI(ctx, l.src)
}

// statusCLI asks as an operator would on the host: domainm status --json --socket with
// the control port's host end (the same protocol as the control socket), and checks the
// answer says monitoring.
func (l *Loop) statusCLI(ctx context.Context, h *Host) error {
	l.releaseControl()
	bin := filepath.Join(filepath.Dir(l.image), "domainm") // built by make image's make build
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "status", "--json", "--socket", ctlSock(h))
	out, err := cmd.Output()
	var r proto.Response
	if jerr := json.Unmarshal(out, &r); err != nil || jerr != nil || r.State != proto.StateMonitoring {
		return fmt.Errorf("%s: %v %v: %s", strings.Join(cmd.Args, " "), err, jerr, out)
	}
	fmt.Fprintf(l.o.Out, "           %s %s: %s\n", bin, strings.Join(cmd.Args[1:], " "), statusText(r))
	return nil
}

func healthyStatus(r proto.Response) bool { return r.Health != nil && r.Health.Healthy }

// consoleTail is the end of a console log, for errors.
func consoleTail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "\n    console: " + strings.Join(lines[max(0, len(lines)-8):], "\n    console: ")
}
