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
