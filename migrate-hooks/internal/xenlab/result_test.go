package xenlab

import (
	"strings"
	"testing"
)

func TestParseE820(t *testing.T) {
	log := `[2026-11-30 08:50:01] [    0.000000] BIOS-provided physical RAM map:
[2026-11-30 08:50:01] [    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009ffff] usable
[2026-11-30 08:50:01] [    0.000000] BIOS-e820: [mem 0x00000000000a0000-0x00000000000fffff] reserved
[2026-11-30 08:50:01] [    0.000000] BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable
[2026-11-30 08:50:01] [    0.000000] BIOS-e820: [mem 0x00000000fc000000-0x00000000fc00afff] ACPI data
torn line BIOS-e820: [mem 0x00000000fc0`
	usable, other, err := ParseE820(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if len(usable) != 2 || usable[1] != (Range{0x100000, 0x8000000}) || Size(usable) != 0xa0000+0x7f00000 {
		t.Fatalf("usable = %v", usable)
	}
	if len(other) != 2 || other[1] != (Range{0xfc000000, 0xfc00b000}) {
		t.Fatalf("other = %v", other)
	}
	have, err := ParseRanges("0x0-0x9f000 0x100000-0x8000000 0xfeff0000-0xfeff5000")
	if err != nil {
		t.Fatal(err)
	}
	if c := Covered(usable, have); c != Size(usable)-0x1000 {
		t.Fatalf("covered %#x of %#x", c, Size(usable))
	}
	for _, bad := range []string{"0x10", "0x20-0x10", "x-0x10"} {
		if _, err := ParseRanges(bad); err == nil {
			t.Errorf("ParseRanges(%q) accepted", bad)
		}
	}
}

func TestParseEvents(t *testing.T) {
	evs, err := ParseEvents(strings.NewReader("1796027943.518172071 A BOOTED uptime=12.5 xen_version 4.17\n" +
		"1796027950.000000000 A FOUND where=A gpa=0x1234 seed=00ff\nnot an event\n17960279" /* torn */))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("%d events", len(evs))
	}
	f, ok := Find(evs, "FOUND", "where=A")
	if !ok || f.Args["gpa"] != "0x1234" || f.Time.Sub(evs[0].Time).Seconds() < 6.4 {
		t.Fatalf("FOUND = %+v", f)
	}
	if _, ok := Find(evs, "FOUND", "where=B"); ok {
		t.Fatal("found where=B")
	}
}

// TestSuspendRequested: lab run 12's watch log, where the watch on the target's control
// node fired at libxl's suspend request and read the node empty (the guest had cleared it).
func TestSuspendRequested(t *testing.T) {
	log := `1796061338.476340891 A XS /local/domain/1/control/feature-suspend 1
1796061905.322996702 A XS /local/domain/1/control/shutdown 
1796061908.528657071 A XS /local/domain/1/control/shutdown 
1796061908.594852640 A XS @releaseDomain 
`
	at, ok := suspendRequested(strings.NewReader(log), 1)
	if !ok || at.Unix() != 1796061905 {
		t.Fatalf("suspend requested at %v (%v), want 1796061905.32", at, ok)
	}
	if _, ok := suspendRequested(strings.NewReader(log), 2); ok {
		t.Fatal("found a suspend request of domain 2")
	}
	at, ok = suspendRequested(strings.NewReader("1.5 A XS /local/domain/3/control/shutdown suspend\n"), 3)
	if !ok || at.UnixMilli() != 1500 {
		t.Fatalf("with the value: %v %v", at, ok)
	}
}
