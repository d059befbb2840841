package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const good = `
[target]
name = "web-1"
memory = "file:/dev/shm/web-1.ram"

[memory]
interval = "30s"
block_size = "1MiB"

[rules]
dir = "/etc/domainm/rules"

[alerts]
hostname = "dm1"

[[alerts.sink]]
name = "local"
type = "file"
path = "/tmp/a.jsonl"

[[alerts.sink]]
name = "siem"
type = "syslog"
transport = "tcp"
address = "127.0.0.1:514"
`

func TestParseGoodFillsDefaults(t *testing.T) {
	c, err := Parse("d.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Memory.Interval != 30*time.Second || c.Memory.BlockSize != 1<<20 {
		t.Errorf("memory = %+v", c.Memory)
	}
	if c.Disk.Interval != DefaultDiskInterval || c.Memory.Workers != 1 || c.Target.Layout != "flat" {
		t.Errorf("defaults not filled: %+v", c)
	}
	if c.Target.Baseline != "/var/lib/domainm/baseline.db" {
		t.Errorf("baseline = %q", c.Target.Baseline)
	}
	if len(c.Alerts.Sinks) != 2 || c.Alerts.Sinks[1].Address != "127.0.0.1:514" || c.Alerts.Hostname != "dm1" {
		t.Fatalf("alerts = %+v", c.Alerts)
	}
}

func TestSinkErrors(t *testing.T) {
	src := good + "\n[[alerts.sink]]\nname = \"x\"\ntype = \"syslog\"\ntransport = \"carrier-pigeon\"\naddress = \"x:1\"\nretry = 3\n"
	_, err := Parse("d.toml", []byte(src))
	if err == nil {
		t.Fatal("bad sink accepted")
	}
	// The third sink starts at line 28.
	want := []string{"d.toml:32: alerts.sink[2].retry: unknown key", "d.toml:30: alerts.sink[2].transport: \"carrier-pigeon\": want tcp or tls or udp"}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error\n%s\nlacks %q", err, w)
		}
	}
}

func TestParseErrorsNameFileLineKey(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"unknown key", "[target]\nname = \"a\"\nmemory = \"file:/x\"\nmemroy = 1\n",
			[]string{"c.toml:4: target.memroy: unknown key (expected one of: baseline, disk, disk_format, host, layout, memory, name, partition, policy, uuid)"}},
		{"unknown table", "[target]\nname = \"a\"\nmemory = \"file:/x\"\n[bogus]\nx = 1\n",
			[]string{"c.toml:4: bogus: unknown key", "c.toml:5: bogus.x: unknown key (expected one of: none"}},
		{"wrong type", "[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\nworkers = \"two\"\n",
			[]string{"c.toml:5: memory.workers: incompatible types"}},
		{"bad duration", "[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\n\ninterval = \"5 minutes\"\n",
			[]string{"c.toml:6: memory.interval: invalid duration"}},
		{"disk format is never probed", "[target]\nname = \"a\"\nmemory = \"file:/x\"\ndisk = \"/d.img\"\ndisk_format = \"auto\"\n",
			[]string{"c.toml:5: target.disk_format: expected \"raw\" or \"qcow2\", got \"auto\""}},
		{"bad size", "[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\nblock_size = \"4 parsecs\"\n",
			[]string{"c.toml:5: memory.block_size: expected a size"}},
		// SI units are powers of 1000, as on the command line (internal/units): 1MB is
		// not a multiple of 4KiB.
		{"SI size", "[target]\nname = \"a\"\nmemory = \"file:/x\"\n[memory]\nblock_size = \"1MB\"\n",
			[]string{"c.toml:5: memory.block_size: expected a multiple of 4KiB from 64KiB to 1GiB, got 1000000 bytes"}},
		{"syntax", "[target]\nname = \"a\n",
			[]string{"c.toml:2: target.name:"}},
		{"missing and invalid values", "[target]\nuuid = \"nope\"\nmemory = \"tape:/x\"\npartition = \"zero\"\n[memory]\nworkers = 0\ninterval = \"10ms\"\n[rules]\ndir = \"rules\"\n[metrics]\nlisten = \"9100\"\n",
			[]string{
				"c.toml:1: target.name: missing",
				"c.toml:2: target.uuid: expected a UUID",
				"c.toml:3: target.memory: expected a memory source spec",
				"c.toml:4: target.partition: expected \"auto\"",
				"c.toml:6: memory.workers: expected a number",
				"c.toml:7: memory.interval: expected a duration of at least 1s",
				"c.toml:9: rules.dir: expected an absolute path",
				"c.toml:11: metrics.listen: expected HOST:PORT",
			}},
		{"bad layout", "[target]\nname = \"a\"\nmemory = \"file:/x\"\nlayout = \"diagonal\"\n",
			[]string{"c.toml:4: target.layout: expected a layout"}},
		{"layout on xen", "[target]\nname = \"a\"\nmemory = \"xen:0\"\nlayout = \"q35\"\n",
			[]string{"c.toml:4: target.layout: a layout other than flat applies only to file:", "c.toml:3: target.memory: expected xen:DOMID"}},
		{"xen: neither an id nor granted", "[target]\nname = \"a\"\nmemory = \"xen:grant\"\n",
			[]string{"c.toml:3: target.memory: expected xen:DOMID with a domain id from 1 to 65535, or xen:granted"}},
		{"remote metrics", "[target]\nname = \"a\"\nmemory = \"xen:5\"\n[metrics]\nlisten = \"0.0.0.0:9477\"\n",
			[]string{"c.toml:5: metrics.listen: expected a loopback address"}},
		{"relative disk", "[target]\nname = \"a\"\nmemory = \"xen:5\"\ndisk = \"img\"\n",
			[]string{"c.toml:4: target.disk: expected an absolute path"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tc.src))
			if err == nil {
				t.Fatal("accepted")
			}
			if !IsConfigError(err) {
				t.Errorf("not a config error: %T", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("errors.As(*Error) failed")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\nlacks %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tc.want) && tc.name != "unknown table" {
				t.Errorf("%d errors, want %d:\n%s", n, len(tc.want), err)
			}
		})
	}
}

// TestShippedConfig parses the commented example installed as /etc/domainm/domainm.toml.
// TestXenGrantedAccepted: xen:granted (the domain dom0's grant names in xenstore
// domainm/target, resolved by the supervisor at every open) is a valid memory source.
func TestXenGrantedAccepted(t *testing.T) {
	c, err := Parse("c.toml", []byte("[target]\nname = \"a\"\nmemory = \"xen:granted\"\n"))
	if err != nil {
		t.Fatalf("xen:granted refused: %v", err)
	}
	if c.Target.Memory != "xen:granted" {
		t.Errorf("target.memory %q", c.Target.Memory)
	}
}

func TestShippedConfig(t *testing.T) {
	path := filepath.Join("..", "..", "..", "image", "domainm.toml")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Memory != d.Memory || c.Disk != d.Disk || !reflect.DeepEqual(c.Rules, d.Rules) || c.State != d.State || c.Control != d.Control {
		t.Errorf("shipped config's values differ from the documented defaults:\n%+v\n%+v", c, d)
	}
	if c.Metrics.Listen != "" {
		t.Errorf("metrics on by default: %q", c.Metrics.Listen)
	}
	if len(c.Alerts.Sinks) == 0 {
		t.Error("shipped config has no sink")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	if err == nil || IsConfigError(err) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}
