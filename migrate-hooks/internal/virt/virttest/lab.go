package virttest

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/domainm/domainm/image/libvirt"
	"github.com/domainm/domainm/migrate-hooks/internal/bench"
)

// Sizes of the lab's guests (MiB). Every memory pass of the supervisor reads and scans
// all of the target's RAM inside a TCG guest (2-5 MB/s here at load 20-28), so the
// target is small and runs its firmware only: on a Linux target the supervisor also
// derives the guest's layout and lists its processes after each pass (memscan/linux),
// which through the view disk (one O_DIRECT request per small read) took a 128 MiB pass
// to 871 s. Domain M holds domainm (about 20 MiB, in its initramfs) and its heap.
const (
	TargetMiB  = 64 // firmware only; TargetFill MiB of it filled by the host
	TargetFill = 32
	DomMMiB    = 256
)

// Lab is two libvirtd "hosts" and a pair (target, Domain M) defined from image/libvirt's
// XML and running at Src, under TCG (domain type 'qemu'). The target runs its firmware,
// with TargetFill MiB of its RAM filled with random data by the host (so that its
// stream takes a while); Domain M runs the host's kernel with a busybox initramfs and
// the real supervisor (domm.go).
type Lab struct {
	Src, Dst         *Daemon
	Target, DomM     string // domain names
	Dir              string
	serialT, serialM string
}

// readyMarker is what Domain M's init prints once domainm runs.
const readyMarker = "DOMAINM-GUEST-READY"

// fillRandom writes n random bytes into the file at off.
func fillRandom(path string, off, n int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(io.NewOffsetWriter(f, off), rand.Reader, n)
	return err
}

// StartLab starts both daemons and the pair at the source; everything is stopped at the
// end of the test. A missing libvirtd, kernel or busybox fails the test. dstHook, if not
// empty, is the destination's qemu hook script.
func StartLab(t testing.TB, dstHook string) *Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	l := &Lab{Dir: dir, Target: "target", DomM: "domm"}
	var err error
	for i, name := range []string{"src", "dst"} {
		hook := ""
		if name == "dst" {
			hook = dstHook
		}
		d, err := Start(ctx, name, filepath.Join(dir, name), randomUUID(), 49600+100*i, hook)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("libvirtd %s log:\n%s", d.Name, d.Log(3000))
			}
			d.Stop()
		})
		if i == 0 {
			l.Src = d
		} else {
			l.Dst = d
		}
	}
	kernel, err := bench.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	dommInitrd := buildDomM(t, dir)
	const cmdline = "console=ttyS0 panic=-1 mitigations=off nokaslr swiotlb=noforce no_timer_check"
	l.serialT, l.serialM = filepath.Join(dir, "target.serial"), filepath.Join(dir, "domm.serial")
	lv := l.Src.Connect(t)
	txml, err := libvirt.TargetXML(libvirt.Target{DomM: l.DomM, Guest: libvirt.Guest{Type: "qemu", Name: l.Target,
		MemMiB: TargetMiB, Serial: l.serialT}})
	if err != nil {
		t.Fatal(err)
	}
	td := defineAndStart(t, lv, txml)
	if err := fillRandom(l.Src.Outside(RAMPath(td.ID, l.Target)), 8<<20, TargetFill<<20); err != nil {
		t.Fatal(err)
	}
	dm := libvirt.DomM{Target: l.Target, ViewPath: RAMPath(td.ID, l.Target),
		Guest: libvirt.Guest{Type: "qemu", Name: l.DomM, MemMiB: DomMMiB, Kernel: kernel, Initrd: dommInitrd,
			Cmdline: cmdline, Serial: l.serialM}}
	mxml, err := libvirt.DomMXML(dm)
	if err != nil {
		t.Fatal(err)
	}
	dm.ViewBlockSize = 4096
	mxml4k, err := libvirt.DomMXML(dm)
	if err != nil {
		t.Fatal(err)
	}
	if mxml, err = testDevices(mxml, mxml4k, l.DomM); err != nil {
		t.Fatal(err)
	}
	defineAndStart(t, lv, mxml)
	for _, s := range []string{l.serialM} {
		if err := waitSerial(ctx, s); err != nil {
			b, _ := os.ReadFile(s)
			t.Logf("%s:\n%s", s, tail(b, 4000))
			t.Fatal(err)
		}
	}
	return l
}

// RAMPath is where libvirt (memory_backing_dir's default) keeps a running domain's RAM.
func RAMPath(id int32, name string) string {
	if len(name) > 20 {
		name = name[:20]
	}
	return fmt.Sprintf("/var/lib/libvirt/qemu/ram/%d-%s/pc.ram", id, name)
}

// TargetRAM is the target's RAM file on d (outside path); the target must run there.
func (l *Lab) TargetRAM(t testing.TB, d *Daemon) string {
	t.Helper()
	lv := d.Connect(t)
	dom, err := lv.DomainLookupByName(l.Target)
	if err != nil {
		t.Fatalf("%s: %v", d.Name, err)
	}
	return d.Outside(RAMPath(dom.ID, l.Target))
}

// Connect opens a plain connection to the daemon, closed at the end of the test.
func (d *Daemon) Connect(t testing.TB) *golibvirt.Libvirt {
	t.Helper()
	lv := golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(d.Socket())))
	if err := lv.ConnectToURI(golibvirt.QEMUSystem); err != nil {
		t.Fatalf("connecting to libvirtd %s: %v", d.Name, err)
	}
	t.Cleanup(func() { lv.Disconnect() })
	return lv
}

// State is a domain's state on d: "running", "paused", "absent" or another.
func (d *Daemon) State(t testing.TB, name string) string {
	t.Helper()
	lv := d.Connect(t)
	dom, err := lv.DomainLookupByName(name)
	if err != nil {
		return "absent"
	}
	st, _, err := lv.DomainGetState(dom, 0)
	if err != nil {
		return "absent"
	}
	switch golibvirt.DomainState(st) {
	case golibvirt.DomainRunning:
		return "running"
	case golibvirt.DomainPaused:
		return "paused"
	case golibvirt.DomainShutoff:
		return "shutoff"
	}
	return fmt.Sprintf("state %d", st)
}

func defineAndStart(t testing.TB, lv *golibvirt.Libvirt, xml string) golibvirt.Domain {
	t.Helper()
	d, err := lv.DomainDefineXML(xml)
	if err != nil {
		t.Fatalf("defining domain: %v\n%s", err, xml)
	}
	if err := lv.DomainCreate(d); err != nil {
		t.Fatalf("starting %s: %v", d.Name, err)
	}
	d, err = lv.DomainLookupByName(d.Name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func waitSerial(ctx context.Context, path string) error {
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), readyMarker) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest not ready (%s ends %q): %w", path, tail(b, 400), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func randomUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
