package virt_test

import (
	"context"
	"testing"
	"time"

	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
	"github.com/domainm/domainm/migrate-hooks/internal/virt"
	"github.com/domainm/domainm/migrate-hooks/internal/virt/virttest"
)

// go-libvirt drops QEMU monitor events without data; the driver's own decoder must
// deliver STOP and RESUME with QEMU's timestamps, which lie between the calls that
// caused them and their return.
func TestMonitorEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := virttest.Start(ctx, "src", t.TempDir(), "11111111-1111-4111-8111-111111111111", 49900, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	h, err := virt.Dial("src", d.URI(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lv := d.Connect(t)
	// Firmware only: nothing to boot, it just runs.
	dom, err := lv.DomainCreateXML(`<domain type='qemu'><name>fw</name><memory unit='MiB'>32</memory>
		<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><memballoon model='none'/></devices></domain>`, 0)
	if err != nil {
		t.Fatal(err)
	}
	vm := (&virt.Migration{Name: "fw", Src: h, Dst: h}).Source()
	from := len(vm.Events())
	before := time.Now()
	if err := lv.DomainSuspend(dom); err != nil {
		t.Fatal(err)
	}
	if err := lv.DomainResume(dom); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	for _, name := range []string{"STOP", "RESUME"} {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		ev, next, err := vm.WaitEvent(c, from, func(e syncpoint.Event) bool { return e.Name == name })
		cancel()
		if err != nil {
			t.Fatalf("no %s event: %v (events %+v)", name, err, vm.Events())
		}
		// QEMU's clock is this host's: allow for the clock's granularity only.
		if ev.Time.Before(before.Add(-time.Millisecond)) || ev.Time.After(after.Add(time.Millisecond)) {
			t.Errorf("%s at %v, not within the calls (%v .. %v)", name, ev.Time, before, after)
		}
		from = next
	}
}
