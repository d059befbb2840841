package config

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// LogLevels are the level names ParseLogLevel accepts, in any case.
const LogLevels = "debug, info, warn (or warning), error"

// ParseLogLevel parses a log level name as operators write it: debug, info, warn,
// warning or error, in any case.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("expected a log level: %s; got %q", LogLevels, s)
}

// ParseLogFormat checks a log format name: text or json, in any case.
func ParseLogFormat(s string) (string, error) {
	switch f := strings.ToLower(strings.TrimSpace(s)); f {
	case "text", "json":
		return f, nil
	}
	return "", fmt.Errorf("expected a log format: text or json; got %q", s)
}

// NewLogger returns domainm's own logger writing to w at level in format (text or
// json; anything else is text). A *slog.LevelVar as level lets a reload change it.
func NewLogger(w io.Writer, level slog.Leveler, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
