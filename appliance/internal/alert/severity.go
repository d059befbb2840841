package alert

import (
	"fmt"
	"strconv"
	"strings"
)

// Severity is an alert's importance, as a syslog severity (RFC 5424 section 6.2.1):
// lower is more severe. Only the five levels below are produced.
type Severity uint8

// The levels Domain M uses, from most to least severe.
const (
	SevCritical Severity = 2 // syslog crit
	SevHigh     Severity = 3 // syslog err
	SevMedium   Severity = 4 // syslog warning
	SevLow      Severity = 5 // syslog notice
	SevInfo     Severity = 6 // syslog informational
)

var sevNames = map[Severity]string{
	SevCritical: "critical", SevHigh: "high", SevMedium: "medium", SevLow: "low", SevInfo: "info",
}

// String is the level's name: critical, high, medium, low or info.
func (s Severity) String() string {
	if n, ok := sevNames[s]; ok {
		return n
	}
	return "sev" + strconv.Itoa(int(s))
}

// ECS is the value of ECS event.severity: higher is more severe, on the scale of
// Elastic's risk scores (low 21, medium 47, high 73, critical 99).
func (s Severity) ECS() int {
	switch s {
	case SevCritical:
		return 99
	case SevHigh:
		return 73
	case SevMedium:
		return 47
	case SevLow:
		return 21
	}
	return 0
}

// syslogName is the RFC 5424 keyword, as ECS log.syslog.severity.name wants it.
func (s Severity) syslogName() string {
	return [...]string{"emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug"}[s&7]
}

// valid reports whether s is one of the five levels.
func (s Severity) valid() bool { _, ok := sevNames[s]; return ok }

// ParseSeverity reads a level name (critical, high, medium, low, info, and the
// synonyms crit, error, warning, moderate, notice, informational) or a number: 1–5
// (5 most severe, as many rule sets write it) or a score 6–100 (Loki/THOR style).
func ParseSeverity(s string) (Severity, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	switch v {
	case "critical", "crit", "emergency", "alert", "severe":
		return SevCritical, nil
	case "high", "error", "err":
		return SevHigh, nil
	case "medium", "moderate", "warning", "warn":
		return SevMedium, nil
	case "low", "notice":
		return SevLow, nil
	case "info", "informational", "none":
		return SevInfo, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 100 {
		return 0, fmt.Errorf("severity %q: want critical, high, medium, low, info, 1-5 or a score 6-100", s)
	}
	return fromNumber(n), nil
}

func fromNumber(n int) Severity {
	switch {
	case n <= 5:
		return [...]Severity{SevInfo, SevInfo, SevLow, SevMedium, SevHigh, SevCritical}[n]
	case n >= 90:
		return SevCritical
	case n >= 70:
		return SevHigh
	case n >= 40:
		return SevMedium
	case n >= 20:
		return SevLow
	}
	return SevInfo
}

// UnmarshalText lets configs write min_severity = "medium".
func (s *Severity) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*s = 0 // unset: the default applies
		return nil
	}
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText writes the level's name.
func (s Severity) MarshalText() ([]byte, error) {
	if s == 0 {
		return nil, nil
	}
	return []byte(s.String()), nil
}

// ruleSeverity maps a rule's metadata to a level: meta "severity" (name or 1-5),
// then "score" (0-100), else medium, the default for a rule match.
func ruleSeverity(meta map[string]string) Severity {
	if v, ok := meta["severity"]; ok {
		if s, err := ParseSeverity(v); err == nil {
			return s
		}
	}
	if v, ok := meta["score"]; ok {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 && n <= 100 {
			return fromNumber(n)
		}
	}
	return SevMedium
}

// Path classes for file-integrity changes. A change where the system's trust is
// rooted (boot, binaries, libraries, accounts, authentication, persistence) is high;
// elsewhere in /etc, /root, /usr, /opt medium; anything else low.
var (
	highPaths = []string{
		"/boot/", "/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/",
		"/usr/bin/", "/usr/sbin/", "/usr/lib/", "/usr/lib64/", "/usr/libexec/",
		"/usr/local/bin/", "/usr/local/sbin/", "/usr/local/lib/",
		"/etc/ld.so.preload", "/etc/ld.so.conf", "/etc/passwd", "/etc/shadow",
		"/etc/group", "/etc/gshadow", "/etc/sudoers", "/etc/ssh/", "/etc/pam.d/",
		"/etc/security/", "/etc/systemd/", "/etc/init.d/", "/etc/rc.local",
		"/etc/crontab", "/etc/cron.", "/var/spool/cron/", "/root/.ssh/",
		"/etc/modprobe.d/", "/etc/modules", "/etc/profile", "/etc/bash.bashrc",
	}
	mediumPaths = []string{"/etc/", "/root/", "/usr/", "/opt/", "/var/lib/", "/home/"}
)

// PathSeverity is the level of an integrity change at path (a path inside the
// target's filesystem, "/"-separated).
func PathSeverity(path string) Severity {
	for _, p := range highPaths {
		if strings.HasPrefix(path, p) || path+"/" == p {
			return SevHigh
		}
	}
	for _, p := range mediumPaths {
		if strings.HasPrefix(path, p) {
			return SevMedium
		}
	}
	return SevLow
}
