// Package bench reproduces the published co-migration experiment on QEMU: a target and a
// Domain M migrated together, sizes varied one VM at a time against a fixed size, with
// synchronisation (sync), without it (nosync: two independent migrations started
// together) and paced (both streams reach stop-and-copy together), over a shaped link
// between two network namespaces and unshaped; tables with the published values
// alongside, and PNG plots.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/domainm/domainm/migrate-hooks/control"
	"github.com/domainm/domainm/migrate-hooks/control/controltest"
	"github.com/domainm/domainm/migrate-hooks/host"
	"github.com/domainm/domainm/migrate-hooks/lab"
	"github.com/domainm/domainm/migrate-hooks/syncpoint"
)

// Options select the experiment.
type Options struct {
	Fixed int   // MiB of the VM held fixed (published: 1024)
	Sizes []int // MiB of the varied VM (published: 1024, 512, 256)
	Reps  int   // runs per cell (published: 10)
	Nets  []string
	Modes []syncpoint.Mode
	Rate  string // tc rate of the shaped link, e.g. "1gbit"
	// RateBytes is that rate in bytes/s, given to the paced mode.
	RateBytes int64
	Accel     string // "kvm", "tcg" or "auto"
	Out       string // folder for plots and the raw results
	Log       *slog.Logger
}

// Run is one co-migration's outcome.
type Run struct {
	Net       string           `json:"net"`
	Mode      string           `json:"mode"`
	TargetMiB int              `json:"target_mib"`
	DomMMiB   int              `json:"domm_mib"`
	Result    syncpoint.Result `json:"result"`
	Err       string           `json:"error,omitempty"`
}

// pairs returns the size combinations: Domain M varied with the target fixed, then the
// target varied with Domain M fixed (the equal-size pair is run once).
func (o Options) pairs() [][2]int {
	var ps [][2]int
	seen := map[[2]int]bool{}
	add := func(p [2]int) {
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	for _, s := range o.Sizes {
		add([2]int{o.Fixed, s})
	}
	for _, s := range o.Sizes {
		add([2]int{s, o.Fixed})
	}
	return ps
}

// Execute runs every cell and returns the runs.
func Execute(ctx context.Context, o Options, progress io.Writer) ([]Run, error) {
	work, err := os.MkdirTemp("", "domainm-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	kernel, err := Kernel()
	if err != nil {
		return nil, err
	}
	initrd, err := BuildInitramfs(work)
	if err != nil {
		return nil, err
	}
	if o.Accel == "auto" || o.Accel == "" {
		o.Accel = linuxAccel(ctx, work, kernel, initrd)
	}
	fmt.Fprintf(progress, "guests: %s + busybox initramfs under %s\n", filepath.Base(kernel), o.Accel)
	var runs []Run
	for _, net := range o.Nets {
		for rep := 0; rep < o.Reps; rep++ {
			for _, p := range o.pairs() {
				for _, m := range o.Modes {
					r := Run{Net: net, Mode: m.String(), TargetMiB: p[0], DomMMiB: p[1]}
					res, err := one(ctx, o, work, net, m, p, kernel, initrd)
					if res != nil {
						r.Result = *res
					}
					if err != nil {
						r.Err = err.Error()
					}
					fmt.Fprintf(progress, "%-8s rep %d target %4d MiB domm %4d MiB %-6s total %6dms P1 %5d P2 %5d P3 %4d P4 %4d downtime %5dms gap %dms %s\n",
						net, rep+1, p[0], p[1], m, r.Result.Total.Milliseconds(),
						r.Result.Waits[0].Milliseconds(), r.Result.Waits[1].Milliseconds(), r.Result.Waits[2].Milliseconds(), r.Result.Waits[3].Milliseconds(),
						r.Result.TargetDowntime.Milliseconds(), r.Result.Gap.Milliseconds(), r.Err)
					r.Result.Timeline = nil // kept out of the summary file: it is long
					runs = append(runs, r)
					if ctx.Err() != nil {
						return runs, ctx.Err()
					}
				}
			}
		}
	}
	return runs, nil
}

// one boots a fresh pair, lets it settle, and co-migrates it.
func one(ctx context.Context, o Options, work, net string, mode syncpoint.Mode, p [2]int, kernel, initrd string) (*syncpoint.Result, error) {
	dir, err := os.MkdirTemp(work, "run-")
	if err != nil {
		return nil, err
	}
	prefix := fmt.Sprintf("domainm-bench-%d-", os.Getpid())
	src := &host.Local{Name: "src", Dir: dir, Prefix: prefix, Log: o.Log}
	dst := &host.Local{Name: "dst", Dir: dir, Prefix: prefix, Log: o.Log}
	cfg := syncpoint.Config{Mode: mode, Log: o.Log}
	if net == "shaped" {
		l, err := newLink(o.Rate)
		if err != nil {
			return nil, err
		}
		defer l.close()
		src.NetNS, src.Addr = l.src, l.srcIP
		dst.NetNS, dst.Addr = l.dst, l.dstIP
		cfg.LinkBandwidth = o.RateBytes
	}
	defer src.Close()
	defer dst.Close()

	spec := lab.NewSpec(p[0], p[1], o.Accel)
	for _, m := range []*host.Machine{&spec.Target, &spec.DomM} {
		m.Kernel, m.Initrd, m.Append = kernel, initrd, guestAppend
	}
	bootCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	pair, err := lab.StartSource(bootCtx, src, spec)
	if err != nil {
		return nil, err
	}
	for _, vm := range []*host.VM{pair.Target, pair.DomM} {
		if err := waitReady(bootCtx, vm.Serial); err != nil {
			return nil, fmt.Errorf("%s: %w", vm.Where(), err)
		}
	}
	time.Sleep(2 * time.Second) // past boot's burst of page writes
	t, m, err := pair.Destination(bootCtx, dst)
	if err != nil {
		return nil, err
	}
	var sup syncpoint.Supervisor
	if mode != syncpoint.NoSync {
		sock := filepath.Join(dir, "control.sock")
		s, err := controltest.Listen(sock, pair.Target.RAMFile)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		c, err := control.Dial(ctx, sock)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		sup = lab.Handshake(c, src, dst, "target")
	}
	migCtx, cancel2 := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel2()
	return syncpoint.Run(migCtx, t, m, sup, cfg)
}

// linuxAccel boots the guest under KVM and keeps KVM if it comes up within 30 s (it
// does not on nested KVM without the right CPU features: the kernel hangs early).
func linuxAccel(ctx context.Context, work, kernel, initrd string) string {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return "tcg"
	}
	h := &host.Local{Name: "probe", Dir: work, Prefix: fmt.Sprintf("domainm-probe-%d-", os.Getpid())}
	defer h.Close()
	vm, err := h.Start(ctx, host.Machine{Name: "linux", MemMiB: 128, Accel: "kvm", Kernel: kernel, Initrd: initrd, Append: guestAppend}, "")
	if err != nil {
		return "tcg"
	}
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if waitReady(c, vm.Serial) != nil {
		return "tcg"
	}
	return "kvm"
}
