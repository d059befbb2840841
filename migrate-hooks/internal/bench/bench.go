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
	"github.com/domainm/domainm/migrate-hooks/internal/controltest"
	"github.com/domainm/domainm/migrate-hooks/internal/host"
	"github.com/domainm/domainm/migrate-hooks/internal/lab"
	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
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

// Execute runs every cell and returns the runs. Each (net, pair) boots its guests once;
// runs then migrate the pair back and forth between the two hosts (after each run the
// destination is the next source), and a failed run reboots the pair.
func Execute(ctx context.Context, o Options, progress io.Writer) ([]Run, error) {
	work, err := os.MkdirTemp("", "domainm-bench-")
	if err != nil {
		return nil, err
	}
	if os.Getenv("DOMAINM_BENCH_KEEP") == "" {
		defer os.RemoveAll(work)
	} else {
		fmt.Fprintf(progress, "keeping %s\n", work)
	}
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
		for _, p := range o.pairs() {
			var s *session
			for rep := 0; rep < o.Reps; rep++ {
				for _, m := range o.Modes {
					if ctx.Err() != nil {
						s.close()
						return runs, ctx.Err()
					}
					r := Run{Net: net, Mode: m.String(), TargetMiB: p[0], DomMMiB: p[1]}
					var res *syncpoint.Result
					if s == nil {
						s, err = boot(ctx, o, work, net, p, kernel, initrd)
					}
					if err == nil {
						res, err = s.migrate(ctx, m)
					}
					if res != nil {
						r.Result = *res
					}
					if err != nil {
						r.Err = err.Error()
						s.close()
						s = nil
					}
					fmt.Fprintf(progress, "%-8s rep %d target %4d MiB domm %4d MiB %-6s total %6sms P1 %5s P2 %5s P3 %4s P4 %4s downtime %5sms (sync wait %5s) gap %sms %s\n",
						net, rep+1, p[0], p[1], m, r.Result.Total.Ms(),
						r.Result.Waits[0].Ms(), r.Result.Waits[1].Ms(), r.Result.Waits[2].Ms(), r.Result.Waits[3].Ms(),
						r.Result.TargetDowntime.Ms(), r.Result.SyncWait.Ms(), r.Result.Gap.Ms(), r.Err)
					r.Result.Timeline = nil // kept out of the summary file: it is long
					runs = append(runs, r)
				}
			}
			s.close()
		}
	}
	return runs, nil
}

// session is a booted pair and its two hosts.
type session struct {
	o     Options
	dir   string
	hosts [2]*host.Local
	link  *link
	pair  *lab.Pair
	src   int // index of the host the pair runs on
	cfg   syncpoint.Config
}

func boot(ctx context.Context, o Options, work, net string, p [2]int, kernel, initrd string) (*session, error) {
	dir, err := os.MkdirTemp(work, "pair-")
	if err != nil {
		return nil, err
	}
	prefix := fmt.Sprintf("domainm-bench-%d-", os.Getpid())
	s := &session{o: o, dir: dir, cfg: syncpoint.Config{Log: o.Log}}
	s.hosts[0] = &host.Local{Name: "a", Dir: dir, Prefix: prefix, Log: o.Log}
	s.hosts[1] = &host.Local{Name: "b", Dir: dir, Prefix: prefix, Log: o.Log}
	if net == "shaped" {
		// Both directions shaped: the pair migrates back and forth.
		s.link, err = newLink(o.Rate)
		if err != nil {
			return nil, err
		}
		s.hosts[0].NetNS, s.hosts[0].Addr = s.link.src, s.link.srcIP
		s.hosts[1].NetNS, s.hosts[1].Addr = s.link.dst, s.link.dstIP
		s.cfg.LinkBandwidth = o.RateBytes
	}
	spec := lab.NewSpec(p[0], p[1], o.Accel)
	for _, m := range []*host.Machine{&spec.Target, &spec.DomM} {
		m.Kernel, m.Initrd, m.Append = kernel, initrd, guestAppend
	}
	bootCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	s.pair, err = lab.StartSource(bootCtx, s.hosts[0], spec)
	if err == nil {
		for _, vm := range []*host.VM{s.pair.Target, s.pair.DomM} {
			if err = waitReady(bootCtx, vm.Serial); err != nil {
				err = fmt.Errorf("%s: %w", vm.Where(), err)
				break
			}
		}
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *session) close() {
	if s == nil {
		return
	}
	s.hosts[0].Close()
	s.hosts[1].Close()
	if s.link != nil {
		s.link.close()
	}
}

// migrate lets the pair settle, co-migrates it to the other host, and makes the
// destination the next source.
func (s *session) migrate(ctx context.Context, mode syncpoint.Mode) (*syncpoint.Result, error) {
	time.Sleep(2 * time.Second) // past a boot's or the last migration's burst of writes
	src, dst := s.hosts[s.src], s.hosts[1-s.src]
	t, m, err := s.pair.Destination(ctx, dst)
	if err != nil {
		return nil, err
	}
	var sup syncpoint.Supervisor
	if mode != syncpoint.NoSync {
		sock := filepath.Join(s.dir, fmt.Sprintf("control-%d.sock", time.Now().UnixNano()))
		st, err := controltest.Listen(sock, s.pair.Target.RAMFile)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		c, err := control.Dial(ctx, sock)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		sup = lab.Handshake(c, src, dst, "target")
	}
	cfg := s.cfg
	cfg.Mode = mode
	migCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	res, err := syncpoint.Run(migCtx, t, m, sup, cfg)
	if err != nil {
		return res, err
	}
	// The old source copies go; their RAM file names are free for the next run.
	for _, vm := range []*host.VM{s.pair.Target, s.pair.DomM} {
		vm.Kill()
		if vm.RAMFile != "" {
			os.Remove(vm.RAMFile)
		}
	}
	s.pair = &lab.Pair{Spec: s.pair.Spec, Src: dst, Target: t.Dst.(*host.VM), DomM: m.Dst.(*host.VM)}
	s.src = 1 - s.src
	return res, nil
}

// linuxAccel boots the guest under KVM and keeps KVM if it comes up within 20 s (it
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
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if waitReady(c, vm.Serial) != nil {
		return "tcg"
	}
	return "kvm"
}
