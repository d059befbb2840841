package alert

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

const exampleTOML = `
[alerts]
hostname = "domainm-web1"

[[alerts.sink]]
name = "siem"
type = "syslog"
transport = "tls"
address = "127.0.0.1:6514"
server_name = "siem.example.org"
min_severity = "medium"
spool_max_bytes = "64MiB"
confirm = "500ms"

[[alerts.sink]]
name = "elastic"
type = "http"
url = "https://127.0.0.1:9200/_bulk"
index = "domainm"
spool_max_bytes = 1048576
timeout = "30s"

[[alerts.sink]]
name = "local"
type = "file"
path = "/var/log/domainm/alerts.jsonl"
max_bytes = "10MiB"

[[alerts.sink]]
name = "journal"
type = "journal"
`

func TestConfigTOML(t *testing.T) {
	var file struct {
		Alerts Config `toml:"alerts"`
	}
	md, err := toml.Decode(exampleTOML, &file)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) != 0 {
		t.Fatalf("undecoded keys: %v", u)
	}
	c := file.Alerts
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s := c.Sinks[0]
	if s.MinSeverity != SevMedium || s.SpoolMaxBytes != 64<<20 || s.Confirm != 500*time.Millisecond ||
		s.Facility != "auth" || s.SDID != DefaultSDID || s.Message != "json" || s.MaxFrameLen != 8192 {
		t.Fatalf("sink 0 decoded as %+v", s)
	}
	if c.Sinks[1].SpoolMaxBytes != 1<<20 || c.Sinks[1].Timeout != 30*time.Second || c.Sinks[2].MaxBytes != 10<<20 {
		t.Fatalf("sinks decoded as %+v", c.Sinks)
	}
	if c.Sinks[3].Socket != "/run/systemd/journal/socket" || c.Sinks[3].MinSeverity != SevInfo {
		t.Fatalf("journal defaults: %+v", c.Sinks[3])
	}
}

func TestConfigErrorsNameKeys(t *testing.T) {
	cases := []struct {
		sink SinkConfig
		key  string
		msg  string
	}{
		{SinkConfig{Name: "a b", Type: TypeFile, Path: "/x"}, "sink[0].name", "want 1-32 characters"},
		{SinkConfig{Name: "a", Type: "kafka"}, "sink[0].type", "want syslog, jsonl, http, journal or file"},
		{SinkConfig{Name: "a", Type: TypeSyslog, Transport: "udp", Address: "nohost"}, "sink[0].address", "want host:port"},
		{SinkConfig{Name: "a", Type: TypeJSONL, Transport: "udp", Address: "h:1"}, "sink[0].transport", "want tcp or tls"},
		{SinkConfig{Name: "a", Type: TypeSyslog, Transport: "tls", Address: "h:1", CAFile: "/nonexistent/ca.pem"}, "sink[0].ca_file", "no such file"},
		{SinkConfig{Name: "a", Type: TypeSyslog, Transport: "tcp", Address: "h:1", Facility: "mars"}, "sink[0].facility", "syslog facility"},
		{SinkConfig{Name: "a", Type: TypeSyslog, Transport: "tcp", Address: "h:1", SDID: "bad id"}, "sink[0].sd_id", "SD-ID"},
		{SinkConfig{Name: "a", Type: TypeHTTP, URL: "ftp://x/"}, "sink[0].url", "http:// or https://"},
		{SinkConfig{Name: "a", Type: TypeFile, Path: "rel/x"}, "sink[0].path", "absolute"},
		{SinkConfig{Name: "a", Type: TypeFile, Path: "/x", SpoolMaxBytes: 100}, "sink[0].spool_max_bytes", "at least 64KiB"},
	}
	for _, c := range cases {
		cfg := Config{Sinks: []SinkConfig{c.sink}}
		err := cfg.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != c.key || !strings.Contains(ce.Msg, c.msg) {
			t.Errorf("%+v: error %v, want key %s and %q", c.sink, err, c.key, c.msg)
		}
	}
	dup := Config{Sinks: []SinkConfig{{Name: "a", Type: TypeJournal}, {Name: "a", Type: TypeJournal}}}
	if err := dup.Validate(); err == nil || !strings.Contains(err.Error(), "sink[1].name") {
		t.Errorf("duplicate names: %v", err)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "10": 10, "64KiB": 64 << 10, "2 MiB": 2 << 20, "1GiB": 1 << 30, "5MB": 5e6, "3kB": 3000} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1TB", "1.5MiB", "9999999999GiB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", in)
		}
	}
}

func TestSeverityMapping(t *testing.T) {
	for in, want := range map[string]Severity{
		"critical": SevCritical, "HIGH": SevHigh, "medium": SevMedium, "low": SevLow, "info": SevInfo,
		"5": SevCritical, "4": SevHigh, "3": SevMedium, "2": SevLow, "1": SevInfo,
		"95": SevCritical, "75": SevHigh, "50": SevMedium, "25": SevLow, "10": SevInfo,
	} {
		if got, err := ParseSeverity(in); err != nil || got != want {
			t.Errorf("ParseSeverity(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseSeverity("urgent"); err == nil {
		t.Error(`ParseSeverity("urgent") accepted`)
	}
	if got := ruleSeverity(map[string]string{"score": "80"}); got != SevHigh {
		t.Errorf("score 80 → %v", got)
	}
	if got := ruleSeverity(nil); got != SevMedium {
		t.Errorf("no meta → %v", got)
	}
	for path, want := range map[string]Severity{
		"/usr/bin/ls": SevHigh, "/etc/shadow": SevHigh, "/boot/vmlinuz": SevHigh, "/root/.ssh/authorized_keys": SevHigh,
		"/etc/cron.d/x": SevHigh, "/etc/hosts": SevMedium, "/home/u/.bashrc": SevMedium, "/var/log/syslog": SevLow, "/tmp/x": SevLow,
	} {
		if got := PathSeverity(path); got != want {
			t.Errorf("PathSeverity(%s) = %v, want %v", path, got, want)
		}
	}
	if SevCritical.ECS() != 99 || SevInfo.ECS() != 0 || SevHigh.syslogName() != "error" {
		t.Error("ECS or syslog names wrong")
	}
}
