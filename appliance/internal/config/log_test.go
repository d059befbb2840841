package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestLogLevels(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "Warn": slog.LevelWarn,
		"warning": slog.LevelWarn, "WARNING": slog.LevelWarn, "error": slog.LevelError} {
		if got, err := ParseLogLevel(in); err != nil || got != want {
			t.Errorf("ParseLogLevel(%q) = %v, %v", in, got, err)
		}
	}
	_, err := ParseLogLevel("verbose")
	if err == nil || !strings.Contains(err.Error(), "debug, info, warn (or warning), error") || !strings.Contains(err.Error(), `"verbose"`) {
		t.Errorf("ParseLogLevel(verbose) = %v", err)
	}
}

func TestLogKeys(t *testing.T) {
	base := "[target]\nname = \"a\"\nmemory = \"file:/x\"\n[log]\n"
	c, err := Parse("c.toml", []byte(base+"level = \"Warning\"\nformat = \"JSON\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "Warning" || c.Log.Format != "JSON" {
		t.Errorf("log = %+v", c.Log)
	}
	if d := Default().Log; d.Level != "info" || d.Format != "text" {
		t.Errorf("default log = %+v", d)
	}
	_, err = Parse("c.toml", []byte(base+"level = \"loud\"\nformat = \"xml\"\n"))
	for _, want := range []string{
		`c.toml:5: log.level: expected a log level: debug, info, warn (or warning), error; got "loud"`,
		`c.toml:6: log.format: expected a log format: text or json; got "xml"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	var b bytes.Buffer
	NewLogger(&b, slog.LevelWarn, "json").Warn("hello", "k", 1)
	NewLogger(&b, slog.LevelWarn, "json").Info("dropped")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["msg"] != "hello" || m["level"] != "WARN" || m["k"] != 1.0 {
		t.Errorf("json log %q: %v", b.String(), err)
	}
}
