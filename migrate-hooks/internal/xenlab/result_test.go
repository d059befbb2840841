package xenlab

import (
	"os"
	"strings"
	"testing"
	"time"
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

func TestParseConsoleAlerts(t *testing.T) {
	// Domain M's console as xenconsoled logs it: init output, the kernel, alerts (one of
	// them cut by other output), in the supervisor's file-sink format.
	log := `[2026-11-30 23:50:01] DOMAINM UP 6.1.0-57-amd64
[2026-11-30 23:50:02] domainm-storage: mounted 10.0.2.2:/export at /srv/storage read-only (ro,soft,port=2049,addr=10.0.2.2)
[2026-11-30 23:50:09] {"@timestamp":"2026-11-30T23:50:07.5Z","ecs":{"version":"8.11.0"},"message":"no file-integrity baseline for /srv/storage/target.img: recorded one with 12 entries in /var/lib/domainm/baseline.db","event":{"kind":"event","action":"disk-baseline-created","severity":0},"host":{"name":"target","type":"vm"}}
[2026-11-30 23:51:00] {"@timestamp":"2026-11-30T23:50:58.25Z","message":"file /usr/bin/.xenlab-A added","event":{"kind":"alert","type":["creation"],"action":"file-added","severity":73},"file":{"path":"/usr/bin/.xenlab-A","name":".xenlab-A","type":"file","mode":"4755","uid":"0"},"host":{"name":"target","type":"vm"},"domainm":{"target":{"name":"target","source":"/srv/storage/target.img"}}}
[2026-11-30 23:51:01] {"@timestamp":"2026-11-30T23:51:00Z","message":"cut","event":{"action":"file-added"},"file":{"path":"/usr/bin/x[   12.5] xen:balloon: something
[2026-11-30 23:51:02] DOMAINM-MEM MemTotal: 273000 kB
`
	as, err := ParseConsoleAlerts(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 2 {
		t.Fatalf("%d alerts, want 2: %+v", len(as), as)
	}
	if b := With(as, "disk-baseline-created", ""); len(b) != 1 || b[0].Timestamp.Format(time.RFC3339Nano) != "2026-11-30T23:50:07.5Z" {
		t.Errorf("baseline: %+v", b)
	}
	f := With(as, "file-added", "/usr/bin/.xenlab-A")
	if len(f) != 1 || f[0].File.Mode != "4755" || f[0].Host.Name != "target" || !strings.Contains(f[0].Raw, `"uid":"0"`) {
		t.Fatalf("file-added: %+v", f)
	}
	if want := time.Date(2026, 11, 30, 23, 51, 0, 0, time.UTC); !f[0].Logged.Equal(want) {
		t.Errorf("logged at %v, want %v (xenconsoled's stamp)", f[0].Logged, want)
	}
	if len(With(as, "file-added", "/usr/bin/.xenlab-B")) != 0 {
		t.Error("an alert of another path matched")
	}
}

func TestNFSConfig(t *testing.T) {
	b, err := os.ReadFile("../../../image/xen/domainm.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NFSConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	s := string(c)
	target := s[strings.Index(s, "[target]"):strings.Index(s, "[memory]")]
	if !strings.Contains(target, `disk = "/srv/storage/target.img"`) || !strings.Contains(target, `disk_format = "raw"`) {
		t.Errorf("[target] without the disk: %s", target)
	}
	if !strings.HasSuffix(s, "\n[disk]\ninterval = \""+NFSDiskInterval+"\"\n") {
		t.Errorf("no [disk] table at the end:\n%s", s)
	}
	if _, err := NFSConfig(c); err == nil {
		t.Error("a config with a [disk] table was accepted again")
	}
}
