// Package xenlab runs Domain M on two real Xen 4.17 hosts nested in QEMU (software
// emulation, emulated SVM+NPT) on this machine: it builds the dom0 image from Debian's
// archive (image/xen/build-dom0.sh, cached in bin/xen-lab), the lab's binaries (the
// Domain M agent, cgo-free; the dom0 tool domainm-xen, cgo on libxenctrl) and guest
// initrds, boots hosts A and B linked by a QEMU socket netdev on 127.0.0.1, lets dom0 A
// run image/xen/run.sh (foreign mapping, the marker found and checked against dom0's
// view, co-migration A→B, the marker planted at B found from B) and reads both hosts'
// event logs back from their lab disks after power-off.
//
// `make xen-lab` runs it (go test -tags xenlab); it is not part of `go test ./...`.
// XENLAB_ANALYZE=1 reads the last run's logs (bin/xen-lab/run) again without booting.
package xenlab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/domainm/domainm/image/ganesha"
)

// Lab is one run's folders and settings.
type Lab struct {
	Repo    string // repository root
	Build   string // dom0 build (bin/xen-lab)
	Run     string // this run's files (bin/xen-lab/run)
	Timeout time.Duration
	Log     io.Writer // progress lines
	// Supervisor: Domain M runs the real supervisor (domainm run, packed with its shared
	// libraries) instead of the agent (XENLAB_DOMM=supervisor).
	Supervisor bool
	// Accel is QEMU's -accel for both hosts (XENLAB_ACCEL; DefaultAccel when empty).
	Accel string
	// NFS: the disk check over NFS (needs Supervisor; on with it unless XENLAB_NFS=0,
	// since lab run nfs-1 passed). The target's disk
	// image (ext4, mkfs.ext4 -d) lies in an export of nfs-ganesha on this machine's
	// 127.0.0.1, which each host reaches through a second NIC on QEMU user networking
	// (10.0.2.2); Domain M mounts it over its vif and checks the image (target.disk).
	NFS bool
	nfs *ganesha.Server
	t0  time.Time
}

// The disk check over NFS: the image's name in the export, where Domain M mounts the
// export (the appliance's mount-storage) and how often it checks.
const (
	NFSImage        = "target.img"
	NFSMount        = "/srv/storage"
	NFSDiskInterval = "15s"
)

// DefaultAccel is the hosts' TCG mode: one thread per host. Lab runs 11, 13 and 14
// (thread=multi) lost the target to triple faults, three of whose four register dumps
// show Xen's own code as the guest's RIP (e008:ffff82d0402044a5, cr2 = rip): guest and
// nested-hypervisor state mixed around an emulated VMRUN/#VMEXIT. thread=multi: 2 of
// runs 10-14 and 19 passed, 3 lost the target to triple faults; thread=single: runs
// 15-18 had no triple fault (3 passed, 15 failed on Domain M's memory). Weak evidence
// (0 of 4 against 3 of 6), no speed difference: run 17 (single) 10.5 min at load 3-8,
// run 19 (multi) 12.7 min at load 2-7. XENLAB_ACCEL overrides it (e.g. tcg,thread=multi).
const DefaultAccel = "tcg,thread=single"

func (l *Lab) accel() string {
	if l.Accel != "" {
		return l.Accel
	}
	return DefaultAccel
}

// New returns a lab for the repository at repo.
func New(repo string, log io.Writer) *Lab {
	b := filepath.Join(repo, "bin", "xen-lab")
	return &Lab{Repo: repo, Build: b, Run: filepath.Join(b, "run"), Timeout: 95 * time.Minute, Log: log, t0: time.Now()}
}

func (l *Lab) step(format string, a ...any) {
	fmt.Fprintf(l.Log, "xen-lab +%6.1fs %s\n", time.Since(l.t0).Seconds(), fmt.Sprintf(format, a...))
}

func (l *Lab) sh(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out, 3000))
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Prepare builds (or reuses) the dom0 image and makes this run's binaries, initrds
// and lab disks.
func (l *Lab) Prepare(ctx context.Context) error {
	l.step("dom0 image: image/xen/build-dom0.sh %s (cached when unchanged)", l.Build)
	if err := l.sh(ctx, l.Repo, nil, filepath.Join(l.Repo, "image/xen/build-dom0.sh"), l.Build); err != nil {
		return err
	}
	os.RemoveAll(l.Run)
	disk := filepath.Join(l.Run, "disk")
	if err := os.MkdirAll(filepath.Join(disk, "out"), 0o755); err != nil {
		return err
	}
	if l.NFS {
		if !l.Supervisor {
			return fmt.Errorf("the disk check over NFS (XENLAB_NFS=1) needs XENLAB_DOMM=supervisor: the agent has no disk check")
		}
		if err := l.prepareNFS(ctx, disk); err != nil {
			return err
		}
	}
	l.step("binaries: agent and domainm-migrate (CGO_ENABLED=0), domainm-xen (-tags xen, libxenctrl)")
	if err := l.sh(ctx, l.Repo, []string{"CGO_ENABLED=0"}, "go", "build", "-o", filepath.Join(l.Run, "agent"), "./migrate-hooks/internal/xenlab/agent"); err != nil {
		return err
	}
	if err := l.sh(ctx, l.Repo, []string{"CGO_ENABLED=1"}, "go", "build", "-tags", "xen", "-o", filepath.Join(disk, "domainm-xen"), "./migrate-hooks/cmd/domainm-xen"); err != nil {
		return err
	}
	if err := l.sh(ctx, l.Repo, []string{"CGO_ENABLED=0"}, "go", "build", "-o", filepath.Join(disk, "domainm-migrate"), "./migrate-hooks/cmd/domainm-migrate"); err != nil {
		return err
	}
	l.step("guest initrds and lab disks")
	x := filepath.Join(l.Repo, "image", "xen")
	for _, f := range []string{"run.sh", "found-console.sh", "nfs-check.sh", "target.cfg", "domainm.cfg"} {
		if err := copyFile(filepath.Join(x, f), filepath.Join(disk, f), 0o755); err != nil {
			return err
		}
	}
	env := []string{"ROOT=" + filepath.Join(l.Build, "rootfs"), "AGENT=" + filepath.Join(l.Run, "agent")}
	if l.Supervisor {
		tree, err := l.packSupervisor(ctx)
		if err != nil {
			return err
		}
		env = append(env, "DOMM_TREE="+tree)
		if l.NFS {
			env = append(env, "DOMM_NFS=1")
		}
		// run.sh reads the mode from the lab disk
		if err := os.WriteFile(filepath.Join(disk, "domm-mode"), []byte("supervisor\n"), 0o644); err != nil {
			return err
		}
	}
	if err := l.sh(ctx, l.Repo, env, filepath.Join(x, "make-initrds.sh"), disk); err != nil {
		return err
	}
	for _, h := range []string{"A", "B"} {
		img := filepath.Join(l.Run, "lab-"+h+".img")
		if err := l.sh(ctx, l.Run, nil, "truncate", "-s", "512M", img); err != nil {
			return err
		}
		if err := l.sh(ctx, l.Run, nil, "mkfs.ext4", "-q", "-F", "-L", "xenlab", "-d", disk, img); err != nil {
			return err
		}
	}
	return nil
}

// packSupervisor builds the real supervisor (appliance/cmd/domainm, cgo on libyara) and
// packs it with its shared libraries, image/xen/domainm.toml and image/xen/rules into a
// tree for Domain M's initrd (Run/domm-tree).
func (l *Lab) packSupervisor(ctx context.Context) (string, error) {
	l.step("the real supervisor for Domain M: domainm (cgo, libyara) with its shared libraries")
	bin := filepath.Join(l.Run, "domainm")
	if err := l.sh(ctx, l.Repo, []string{"CGO_ENABLED=1"}, "go", "build", "-o", bin, "./appliance/cmd/domainm"); err != nil {
		return "", err
	}
	tree := filepath.Join(l.Run, "domm-tree")
	ns, err := PackDynamic(tree, bin, "bin/domainm")
	if err != nil {
		return "", err
	}
	l.step("packed domainm with %d shared objects", len(ns))
	x := filepath.Join(l.Repo, "image", "xen")
	if err := os.MkdirAll(filepath.Join(tree, "etc", "domainm", "rules"), 0o755); err != nil {
		return "", err
	}
	conf, err := os.ReadFile(filepath.Join(x, "domainm.toml"))
	if err != nil {
		return "", err
	}
	if l.NFS {
		if conf, err = NFSConfig(conf); err != nil {
			return "", err
		}
		// the appliance's /etc/domainm/nfs: what mount-storage mounts
		if err := os.WriteFile(filepath.Join(tree, "etc", "domainm", "nfs"), []byte(l.nfsConf()), 0o644); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "domainm", "domainm.toml"), conf, 0o644); err != nil {
		return "", err
	}
	rules, err := filepath.Glob(filepath.Join(x, "rules", "*.yar"))
	if err != nil || len(rules) == 0 {
		return "", fmt.Errorf("no rules in %s/rules: %v", x, err)
	}
	for _, r := range rules {
		if err := copyFile(r, filepath.Join(tree, "etc", "domainm", "rules", filepath.Base(r)), 0o644); err != nil {
			return "", err
		}
	}
	return tree, nil
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}

// host is one nested Xen host: a QEMU process (its own process group).
type host struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

// qemuArgs are host h's QEMU arguments; port links the two hosts' NICs on 127.0.0.1.
func (l *Lab) qemuArgs(h string, port int) []string {
	net := fmt.Sprintf("socket,id=n1,listen=127.0.0.1:%d", port)
	mac := "52:54:00:12:34:0a"
	if h == "B" {
		net = fmt.Sprintf("socket,id=n1,connect=127.0.0.1:%d", port)
		mac = "52:54:00:12:34:0b"
	}
	args := []string{
		"-accel", l.accel(), "-cpu", "qemu64,+svm,+npt", "-m", "3G", "-smp", "2",
		// -nodefaults: no VGA, floppy, CD-ROM or parallel port for dom0's udev to probe
		// (minutes each under TCG on a loaded machine).
		"-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
		"-serial", "file:" + filepath.Join(l.Run, "serial-"+h+".log"),
		"-kernel", filepath.Join(l.Build, "xen.elf"),
		"-append", "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 loglvl=all guest_loglvl=all noreboot",
		"-initrd", filepath.Join(l.Build, "vmlinuz") + " root=/dev/vda rw console=hvc0 earlyprintk=xen init=/sbin/xenlab-init xenlab_role=" + h + "," + filepath.Join(l.Build, "initrd.img"),
		"-drive", "file=" + filepath.Join(l.Build, "dom0.img") + ",if=virtio,format=raw,snapshot=on",
		"-drive", "file=" + filepath.Join(l.Run, "lab-"+h+".img") + ",if=virtio,format=raw,cache=unsafe",
		"-netdev", net, "-device", "virtio-net-pci,netdev=n1,mac=" + mac,
	}
	if l.NFS {
		// the storage network: QEMU user networking, whose 10.0.2.2 is this machine's
		// 127.0.0.1, where ganesha listens (run.sh finds the NIC by its MAC)
		args = append(args, "-netdev", "user,id=n2,net=10.0.2.0/24",
			"-device", "virtio-net-pci,netdev=n2,mac="+strings.Replace(mac, ":34:", ":35:", 1))
	}
	return args
}

func (l *Lab) start(h string, port int) (*host, error) {
	cmd := exec.Command("qemu-system-x86_64", l.qemuArgs(h, port)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	f, err := os.Create(filepath.Join(l.Run, "qemu-"+h+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting host %s: %w", h, err)
	}
	hs := &host{name: h, cmd: cmd, done: make(chan error, 1)}
	go func() { hs.done <- cmd.Wait(); f.Close() }()
	return hs, nil
}

func (hs *host) kill() { syscall.Kill(-hs.cmd.Process.Pid, syscall.SIGKILL) }

// Boot runs both hosts until they power off (dom0 A powers both off when run.sh ends)
// and reads their lab disks' out/ folders into Run/out-A and Run/out-B.
func (l *Lab) Boot(ctx context.Context, port int) error {
	l.step("boot hosts A and B (QEMU -accel %s, -cpu qemu64,+svm,+npt, 3 GiB, 2 vCPUs each; link 127.0.0.1:%d)", l.accel(), port)
	if l.nfs != nil {
		if err := l.nfs.Start(ctx); err != nil {
			return err
		}
		l.step("shared storage: ganesha (pid %d) exports %s on %s, NFSv4, read-write", l.nfs.Pid(), l.nfs.Export, l.nfs.Addr)
	}
	a, err := l.start("A", port)
	if err != nil {
		return err
	}
	defer a.kill()
	time.Sleep(2 * time.Second) // A listens before B connects
	b, err := l.start("B", port)
	if err != nil {
		return err
	}
	defer b.kill()
	if l.nfs != nil {
		defer func() { l.step("ganesha stopped (%v)", l.nfs.Close()) }()
	}
	timeout := time.After(l.Timeout)
	// this machine's load while the nested hosts run (every figure is stated with it)
	load := time.NewTicker(5 * time.Minute)
	defer load.Stop()
	l.step("host load average: %s", loadavg())
	var errs []string
	for left := 2; left > 0; {
		select {
		case <-load.C:
			l.step("host load average: %s", loadavg())
			continue
		case err := <-a.done:
			l.step("host A powered off (%v); host load average: %s", err, loadavg())
			a.done = nil
		case err := <-b.done:
			l.step("host B powered off (%v); host load average: %s", err, loadavg())
			b.done = nil
		case <-timeout:
			errs = append(errs, fmt.Sprintf("hosts still running after %v", l.Timeout))
			left = 0
		case <-ctx.Done():
			return ctx.Err()
		}
		left--
	}
	a.kill()
	b.kill()
	for _, h := range []string{"A", "B"} {
		if err := l.ReadOut(ctx, h); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// ReadOut copies out/ of host h's lab disk into Run/out-h. e2fsck first replays the
// journal: a host killed by the timeout (or powered off without the read-only remount)
// leaves its last writes there, and debugfs does not replay it.
func (l *Lab) ReadOut(ctx context.Context, h string) error {
	img := filepath.Join(l.Run, "lab-"+h+".img")
	exec.CommandContext(ctx, "e2fsck", "-fy", img).Run() // exit 1 or 2: fixed
	// rdump /out DIR writes DIR/out: dump into a scratch folder, then rename.
	dst, tmp := filepath.Join(l.Run, "out-"+h), filepath.Join(l.Run, ".rdump-"+h)
	os.RemoveAll(dst)
	os.RemoveAll(tmp)
	os.MkdirAll(tmp, 0o755)
	defer os.RemoveAll(tmp)
	if err := l.sh(ctx, l.Run, nil, "debugfs", "-R", "rdump /out "+tmp, img); err != nil {
		return err
	}
	return os.Rename(filepath.Join(tmp, "out"), dst)
}

// loadavg is this machine's 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// prepareNFS makes the target's disk image (a small ext4 made with mkfs.ext4 -d) in the
// run's export folder, prepares ganesha (its port chosen) and writes the hosts' storage
// configuration to the lab disk (disk/nfs, read by run.sh).
func (l *Lab) prepareNFS(ctx context.Context, disk string) error {
	export, tree := filepath.Join(l.Run, "export"), filepath.Join(l.Run, "target-tree")
	files := map[string]string{
		"etc/hostname":    "target\n",
		"etc/passwd":      "root:x:0:0:root:/root:/bin/sh\n",
		"etc/motd":        "the Xen lab's target\n",
		"usr/bin/tool":    "#!/bin/sh\necho tool\n",
		"usr/sbin/daemon": "#!/bin/sh\nexec sleep infinity\n",
	}
	for p, data := range files {
		f := filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(p, "usr/") {
			mode = 0o755
		}
		if err := os.WriteFile(f, []byte(data), mode); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(export, 0o755); err != nil {
		return err
	}
	img := filepath.Join(export, NFSImage)
	if err := l.sh(ctx, l.Run, nil, "mkfs.ext4", "-q", "-F", "-d", tree, "-E", "root_owner=0:0", "-b", "4096", "-L", "target", img, "16M"); err != nil {
		return err
	}
	s, err := ganesha.New(ganesha.Config{Export: export, Dir: filepath.Join(l.Run, "ganesha"), Writable: true})
	if err != nil {
		return err
	}
	l.nfs = s
	l.step("target's disk image %s (ext4, mkfs.ext4 -d, 16 MiB); ganesha to serve %s on %s", img, export, s.Addr)
	return os.WriteFile(filepath.Join(disk, "nfs"), []byte(l.nfsConf()), 0o644)
}

// nfsConf is the storage configuration in the appliance's /etc/domainm/nfs format, as
// a guest on a host's QEMU user network reaches ganesha.
func (l *Lab) nfsConf() string {
	return fmt.Sprintf("server = 10.0.2.2\nport = %d\nexport = %s\n", l.nfs.Port, l.nfs.Pseudo)
}

// NFSConfig adds the disk check to the lab's domainm.toml: target.disk on the storage
// mount and [disk] interval NFSDiskInterval.
func NFSConfig(conf []byte) ([]byte, error) {
	const memLine = "memory = \"xen:granted\"\n"
	s := string(conf)
	if strings.Count(s, memLine) != 1 || strings.Contains(s, "\n[disk]") {
		return nil, fmt.Errorf("domainm.toml: want one line %q and no [disk] table", strings.TrimSpace(memLine))
	}
	s = strings.Replace(s, memLine, memLine+fmt.Sprintf("disk = %q\ndisk_format = \"raw\"\n", NFSMount+"/"+NFSImage), 1)
	return []byte(s + fmt.Sprintf("\n[disk]\ninterval = %q\n", NFSDiskInterval)), nil
}
