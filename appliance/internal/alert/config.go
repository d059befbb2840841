package alert

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the alerts part of domainm.toml:
//
//	[alerts]
//	hostname = "domainm-web1"      # observer.hostname and syslog HOSTNAME; default: the OS hostname
//	[[alerts.sink]]
//	name = "siem"
//	type = "syslog"                # syslog, jsonl, http, journal, file
//	transport = "tls"              # syslog: udp, tcp, tls; jsonl: tcp, tls
//	address = "siem.example.org:6514"
//	ca_file = "/etc/domainm/siem-ca.pem"
type Config struct {
	Hostname string       `toml:"hostname"`
	Sinks    []SinkConfig `toml:"sink"`
}

// SinkConfig is one [[alerts.sink]] table. Zero values take the defaults documented
// per field; Validate reports what is wrong, naming the key.
type SinkConfig struct {
	Name        string   `toml:"name"` // unique; names the spool and the metrics label
	Type        string   `toml:"type"`
	MinSeverity Severity `toml:"min_severity"` // default info: everything

	// syslog and jsonl
	Transport          string `toml:"transport"` // udp (syslog only), tcp, tls
	Address            string `toml:"address"`   // host:port
	CAFile             string `toml:"ca_file"`   // default: system roots
	ServerName         string `toml:"server_name"`
	CertFile           string `toml:"cert_file"` // client certificate, optional
	KeyFile            string `toml:"key_file"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"` // never by default; logs a warning

	// syslog
	Facility    string `toml:"facility"`      // default "auth"
	Message     string `toml:"message"`       // MSG: "json" (default) or "text"
	SDID        string `toml:"sd_id"`         // default "domainm@32473"
	MaxFrameLen int    `toml:"max_frame_len"` // bytes per syslog message; default 8192 (rsyslog's default)

	// http
	URL          string `toml:"url"`   // e.g. https://es.example.org:9200/_bulk
	Index        string `toml:"index"` // default "domainm-alerts"
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	APIKeyFile   string `toml:"api_key_file"`

	// journal
	Socket string `toml:"socket"` // default /run/systemd/journal/socket

	// file
	Path     string   `toml:"path"`
	MaxBytes ByteSize `toml:"max_bytes"` // rotate when bigger; default 100 MiB; 0 in the file means default
	Keep     int      `toml:"keep"`      // rotated files kept; default 5

	// delivery
	SpoolMaxBytes ByteSize      `toml:"spool_max_bytes"` // default 256 MiB
	Batch         int           `toml:"batch"`           // events per write; default 500
	Timeout       time.Duration `toml:"timeout"`         // dial/write/request timeout; default 10s
	BackoffMin    time.Duration `toml:"backoff_min"`     // default 500ms
	BackoffMax    time.Duration `toml:"backoff_max"`     // default 30s
	// Confirm is how long a stream connection must stay healthy after the receiver's
	// TCP stack acknowledged a batch before the batch leaves the spool. Default 1s.
	Confirm time.Duration `toml:"confirm"`

	// RateLimit bounds the alerts a second this sink delivers (0: no limit), with
	// bursts of RateBurst (default: one second's worth). What is over it is held back
	// in the spool, counted and reported, and delivered in order later: never dropped.
	RateLimit float64 `toml:"rate_limit"`
	RateBurst int     `toml:"rate_burst"`
}

// ByteSize is a size in bytes; the config accepts an integer or a string with a
// unit: "64MiB", "1GiB", "500kB".
type ByteSize int64

// UnmarshalTOML implements toml.Unmarshaler for both forms.
func (b *ByteSize) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("size %d is negative", x)
		}
		*b = ByteSize(x)
		return nil
	case string:
		n, err := ParseByteSize(x)
		*b = n
		return err
	}
	return fmt.Errorf("size: want an integer or a string like \"64MiB\", got %T", v)
}

// ParseByteSize reads "123", "64MiB", "10MB", "1GiB", "500kB".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("size %q: want a non-negative integer with an optional unit (B, kB, MB, GB, KiB, MiB, GiB)", s)
	}
	return ByteSize(n * mult), nil
}

// Sink types and transports.
const (
	TypeSyslog  = "syslog"
	TypeJSONL   = "jsonl"
	TypeHTTP    = "http"
	TypeJournal = "journal"
	TypeFile    = "file"
)

// DefaultSDID is the SD-ID of the structured-data element Domain M writes. 32473 is
// the private enterprise number IANA reserves for documentation (RFC 5612); a site
// with its own number sets sd_id.
const DefaultSDID = "domainm@32473"

// ConfigError is a config mistake; Key is the path of the offending key
// ("sink[1].address"), so the caller can add file and line.
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Msg }

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// Validate checks every sink and fills defaults in place. All problems are
// reported, joined; each is a *ConfigError.
func (c *Config) Validate() error {
	var errs []error
	seen := map[string]int{}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		key := fmt.Sprintf("sink[%d]", i)
		if j, dup := seen[s.Name]; dup && s.Name != "" {
			errs = append(errs, &ConfigError{key + ".name", fmt.Sprintf("%q already names sink[%d]; names must be unique", s.Name, j)})
		}
		seen[s.Name] = i
		for _, err := range s.validate() {
			errs = append(errs, &ConfigError{key + "." + err.Key, err.Msg})
		}
	}
	return errors.Join(errs...)
}

func (s *SinkConfig) validate() []*ConfigError {
	var errs []*ConfigError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &ConfigError{key, fmt.Sprintf(format, args...)})
	}
	if !validName(s.Name) {
		bad("name", "%q: want 1-32 characters of a-z, A-Z, 0-9, '-', '_' (it names the spool and a metric label)", s.Name)
	}
	s.defaults()
	if s.MinSeverity != 0 && !s.MinSeverity.valid() {
		bad("min_severity", "want critical, high, medium, low or info")
	}
	switch s.Type {
	case TypeSyslog, TypeJSONL:
		okT := map[string]bool{"tcp": true, "tls": true, "udp": s.Type == TypeSyslog}
		if !okT[s.Transport] {
			bad("transport", "%q: want tcp or tls%s", s.Transport, map[bool]string{true: " or udp", false: ""}[s.Type == TypeSyslog])
		}
		if _, port, err := net.SplitHostPort(s.Address); err != nil || port == "" {
			bad("address", "%q: want host:port", s.Address)
		}
		if s.Transport == "tls" {
			errs = append(errs, s.validateTLS()...)
		}
	case TypeHTTP:
		u, err := url.Parse(s.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("url", "%q: want an http:// or https:// URL of the _bulk endpoint", s.URL)
		} else if u.Scheme == "https" {
			errs = append(errs, s.validateTLS()...)
		}
		if s.PasswordFile != "" && s.Username == "" {
			bad("username", "password_file is set but username is empty")
		}
		if s.PasswordFile != "" && s.APIKeyFile != "" {
			bad("api_key_file", "set password_file or api_key_file, not both")
		}
		errs = append(errs, readable("password_file", s.PasswordFile)...)
		errs = append(errs, readable("api_key_file", s.APIKeyFile)...)
	case TypeJournal:
	case TypeFile:
		if s.Path == "" || s.Path[0] != '/' {
			bad("path", "%q: want an absolute file path", s.Path)
		}
	default:
		bad("type", "%q: want syslog, jsonl, http, journal or file", s.Type)
	}
	if s.Type == TypeSyslog {
		if _, ok := facilities[s.Facility]; !ok {
			bad("facility", "%q: want a syslog facility name such as auth, authpriv, daemon, local0..local7", s.Facility)
		}
		if s.Message != "json" && s.Message != "text" {
			bad("message", "%q: want json or text", s.Message)
		}
		if !validSDName(s.SDID) {
			bad("sd_id", "%q: want an SD-ID like name@12345 (1-32 printable ASCII characters, no '=', ' ', ']' or '\"')", s.SDID)
		}
		if s.MaxFrameLen < 480 || s.MaxFrameLen > 1<<20 {
			bad("max_frame_len", "%d: want 480 to 1048576 bytes", s.MaxFrameLen)
		}
	}
	if s.SpoolMaxBytes < 64<<10 {
		bad("spool_max_bytes", "%d: want at least 64KiB", s.SpoolMaxBytes)
	}
	if s.Batch < 1 || s.Batch > 10000 {
		bad("batch", "%d: want 1 to 10000", s.Batch)
	}
	if s.BackoffMin <= 0 || s.BackoffMax < s.BackoffMin {
		bad("backoff_max", "want 0 < backoff_min <= backoff_max")
	}
	if s.Timeout <= 0 || s.Confirm < 0 {
		bad("timeout", "want timeout > 0 and confirm >= 0")
	}
	if s.RateLimit < 0 || s.RateLimit > 1e6 {
		bad("rate_limit", "%v: want alerts a second from 0 (no limit) to 1000000", s.RateLimit)
	}
	if s.RateBurst < 0 {
		bad("rate_burst", "%d: want 0 (one second's worth) or more", s.RateBurst)
	}
	return errs
}

func (s *SinkConfig) validateTLS() []*ConfigError {
	var errs []*ConfigError
	errs = append(errs, readable("ca_file", s.CAFile)...)
	errs = append(errs, readable("cert_file", s.CertFile)...)
	errs = append(errs, readable("key_file", s.KeyFile)...)
	if (s.CertFile == "") != (s.KeyFile == "") {
		errs = append(errs, &ConfigError{"key_file", "cert_file and key_file go together"})
	}
	return errs
}

func readable(key, path string) []*ConfigError {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return []*ConfigError{{key, err.Error()}}
	}
	f.Close()
	return nil
}

func (s *SinkConfig) defaults() {
	if s.MinSeverity == 0 {
		s.MinSeverity = SevInfo
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&s.Facility, "auth")
	def(&s.Message, "json")
	def(&s.SDID, DefaultSDID)
	def(&s.Index, "domainm-alerts")
	def(&s.Socket, "/run/systemd/journal/socket")
	if s.MaxFrameLen == 0 {
		s.MaxFrameLen = 8192
	}
	if s.MaxBytes == 0 {
		s.MaxBytes = 100 << 20
	}
	if s.Keep == 0 {
		s.Keep = 5
	}
	if s.SpoolMaxBytes == 0 {
		s.SpoolMaxBytes = 256 << 20
	}
	if s.Batch == 0 {
		s.Batch = 500
	}
	if s.Timeout == 0 {
		s.Timeout = 10 * time.Second
	}
	if s.BackoffMin == 0 {
		s.BackoffMin = 500 * time.Millisecond
	}
	if s.BackoffMax == 0 {
		s.BackoffMax = 30 * time.Second
	}
	if s.Confirm == 0 {
		s.Confirm = time.Second
	}
}

func validName(n string) bool {
	if n == "" || len(n) > 32 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validSDName checks RFC 5424 SD-NAME: 1*32 PRINTUSASCII except '=', SP, ']', '"'.
func validSDName(n string) bool {
	if n == "" || len(n) > 32 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c < 33 || c > 126 || c == '=' || c == ']' || c == '"' {
			return false
		}
	}
	return true
}
