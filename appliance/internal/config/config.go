// Package config reads domainm's TOML configuration file (/etc/domainm/domainm.toml).
//
// Load decodes the file strictly: an unknown key, a value of the wrong type or an
// invalid value is an error that names the file, the line and the key and says what
// was expected. Every problem found is reported, not just the first, so an operator
// fixes a file in one go. Defaults are filled in for keys the file leaves out.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/detectors"
	"github.com/domainm/domainm/memscan"
)

// DefaultPath is where domainm run looks for its configuration.
const DefaultPath = "/etc/domainm/domainm.toml"

// Config is the whole configuration file.
type Config struct {
	Target  Target  `toml:"target"`
	Memory  Memory  `toml:"memory"`
	Disk    Disk    `toml:"disk"`
	Rules   Rules   `toml:"rules"`
	State   State   `toml:"state"`
	Metrics Metrics `toml:"metrics"`
	Control Control `toml:"control"`
	Log     Log     `toml:"log"`
	// Alerts is the [alerts] table with its [[alerts.sink]] tables, defined and
	// validated by the alert package.
	Alerts alert.Config `toml:"alerts"`

	// Path is the file the configuration was read from.
	Path string `toml:"-"`
	pos  positions
}

// Target identifies the watched VM and where its memory and disk are.
type Target struct {
	Name   string `toml:"name"`
	UUID   string `toml:"uuid"`
	Host   string `toml:"host"`
	Memory string `toml:"memory"` // memory source spec: file:PATH, elf:PATH, xen:DOMID, xen:granted
	Layout string `toml:"layout"` // how a RAM file maps to guest-physical addresses
	// Disk is the target's disk image; empty means no disk checks.
	Disk string `toml:"disk"`
	// DiskFormat is "raw" or "qcow2", never probed: a guest can write a qcow2 header
	// naming a host file as its backing file into the first sector of a raw disk.
	DiskFormat string `toml:"disk_format"`
	Partition  string `toml:"partition"` // "auto", or a 1-based partition number
	Policy     string `toml:"policy"`    // file-integrity policy; "" for the built-in one
	Baseline   string `toml:"baseline"`  // baseline database; default STATE/baseline.db
}

// Memory configures memory passes.
type Memory struct {
	Interval time.Duration `toml:"interval"` // from the start of one pass to the next
	Workers  int           `toml:"workers"`  // scan goroutines: the CPU budget
	// BlockSize and Overlap are in bytes; strings such as "4MiB" are accepted.
	BlockSize Size `toml:"block_size"`
	Overlap   Size `toml:"overlap"`
	// StallTimeout: a pass that reads no memory for this long counts as stuck, and the
	// systemd watchdog is no longer fed.
	StallTimeout time.Duration `toml:"stall_timeout"`
	// YaraTimeout bounds libyara's time on one block (whole seconds: libyara's unit): a
	// pathological rule (or attacker-shaped memory) cannot stall a pass; a block that
	// hits it is reported as unscanned.
	YaraTimeout time.Duration `toml:"yara_timeout"`
	// MaxMatchesPerRule bounds the string matches (addresses) kept per rule and block;
	// the rest are counted and reported as cut in findings and alerts.
	MaxMatchesPerRule int `toml:"max_matches_per_rule"`
	// RescanAfterPasses bounds how many passes an unchanged block's earlier result is
	// reused before the block is scanned again anyway (the change hash is fast, not
	// cryptographic); the rescans are spread over the passes.
	RescanAfterPasses int `toml:"rescan_after_passes"`
	// RunBudget bounds the rule engine's work a scan worker takes at once (a run of up
	// to 16 adjacent windows, sized by the CPU time windows took before): a pass that
	// prepare (co-migration) or a reload cancels returns about this long, or one
	// window's time when a window takes longer, after the cancel. Longer runs save a
	// little of libyara's cost per call with heavy rule sets. 0: no bound, runs of 32
	// windows whatever they cost (memscan.DriverConfig.RunBudget).
	RunBudget time.Duration `toml:"run_budget"`
}

// DriverRunBudget is RunBudget as memscan.DriverConfig takes it (0 there is the
// default, a negative budget no bound).
func (m Memory) DriverRunBudget() time.Duration {
	if m.RunBudget == 0 {
		return -1
	}
	return m.RunBudget
}

// Disk configures disk checks.
type Disk struct {
	Interval time.Duration `toml:"interval"`
	// AggregateAbove: more alerts than this of one kind under one folder from one
	// check become one summary alert plus the details at info (alert.Aggregate); 0 off.
	AggregateAbove int `toml:"aggregate_above"`
}

// Rules configures the YARA rules folder.
type Rules struct {
	Dir      string        `toml:"dir"`
	Debounce time.Duration `toml:"debounce"` // quiet time after a change before recompiling
	// Disable and Exceptions control rules without editing rule files (rulecontrol.go);
	// both change live on reload.
	Disable    []string        `toml:"disable"`
	Exceptions []RuleException `toml:"exception"`
}

// State configures where domainm keeps its state (event log, baseline, spools).
type State struct {
	Dir string `toml:"dir"`
}

// Metrics configures the Prometheus and health listener. Empty Listen means off; a
// non-loopback address needs AllowRemote.
type Metrics struct {
	Listen      string `toml:"listen"`
	AllowRemote bool   `toml:"allow_remote"`
}

// Control configures the control channel used by the migration coordinator.
type Control struct {
	Socket string `toml:"socket"`
	// Device is a character device carrying the same protocol: the guest end of a
	// virtio-serial port when domainm runs inside a QEMU Domain M; /dev/xen/xenbus: over
	// xenstore, in a Xen Domain M (Domain M's subtree: control.ServeXenstore). "" for none.
	Device string `toml:"device"`
	// QuiesceTimeout: quiesced (after prepare) this long without a resume raises an
	// alert, since the target is then not watched.
	QuiesceTimeout time.Duration `toml:"quiesce_timeout"`
}

// Log configures domainm's own log (stderr, so the journal under systemd). The
// --log-level and --log-format flags of domainm run override it.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn (or warning), error; any case
	Format string `toml:"format"` // text (logfmt-like key=value) or json (one object a line)
}

// Defaults.
const (
	DefaultMemoryInterval = 5 * time.Minute
	DefaultDiskInterval   = time.Hour
	DefaultBlockSize      = memscan.DefaultBlockSize // the same window as scan-memory's
	DefaultOverlap        = memscan.DefaultOverlap
	DefaultYaraTimeout    = memscan.DefaultBlockTimeout
	DefaultMaxMatches     = detectors.DefaultMaxMatchesPerRule
	DefaultStallTimeout   = 2 * time.Minute
	DefaultDebounce       = time.Second
	DefaultRulesDir       = "/etc/domainm/rules"
	DefaultStateDir       = "/var/lib/domainm"
	DefaultControlSocket  = "/run/domainm/control.sock"
	DefaultQuiesceTimeout = 2 * time.Minute
)

// Default returns the configuration used for keys a file leaves out.
func Default() Config {
	return Config{
		Target:  Target{Layout: "flat", DiskFormat: "raw", Partition: "auto"},
		Memory:  Memory{Interval: DefaultMemoryInterval, Workers: 1, BlockSize: DefaultBlockSize, Overlap: DefaultOverlap, StallTimeout: DefaultStallTimeout, YaraTimeout: DefaultYaraTimeout, MaxMatchesPerRule: DefaultMaxMatches, RescanAfterPasses: memscan.DefaultReusePasses, RunBudget: memscan.DefaultRunBudget},
		Disk:    Disk{Interval: DefaultDiskInterval, AggregateAbove: alert.DefaultAggregateAbove},
		Rules:   Rules{Dir: DefaultRulesDir, Debounce: DefaultDebounce},
		State:   State{Dir: DefaultStateDir},
		Control: Control{Socket: DefaultControlSocket, QuiesceTimeout: DefaultQuiesceTimeout},
		Log:     Log{Level: "info", Format: "text"},
	}
}

// Load reads and validates the file at path. Its error is an *Errors listing every
// problem with file, line and key, or an error reading the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates data, read from path (used in messages and to resolve
// nothing else: relative paths in the file are taken as they are).
func Parse(path string, data []byte) (*Config, error) {
	c, errs := ParseAll(path, data)
	if errs != nil {
		return nil, errs
	}
	return c, nil
}

// ParseAll is Parse for domainm run --check-config: it returns every problem in the
// file, and beside them the configuration as far as it could be read (a key with a
// bad value keeps its default), so that what the file points at (rules folder, memory
// source, certificates) can be checked too. The configuration is nil only when the
// file is not TOML at all. Problems are in line order.
func ParseAll(path string, data []byte) (*Config, *Errors) {
	pos := indexKeys(data)
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		// Not TOML: the parser cannot go past its first syntax error.
		return nil, &Errors{List: []*Error{decodeError(path, pos, err)}}
	}
	var errs []*Error
	failed := map[string]bool{} // keys already reported: no second message about them
	// The TOML library stops at the first value it cannot decode into its field. Each
	// such value is reported and its line left out of the next try, until the rest
	// decodes: every bad value is reported, not just the first.
	c := Default()
	md, err := toml.Decode(string(data), &c)
	for tries, work := 0, data; err != nil; tries++ {
		e := decodeError(path, pos, err)
		e.Key = pos.keyAt(e.Line, e.Key)
		if strings.Contains(e.Msg, "invalid duration") && isBareNumber(lookup(raw, e.Key)) {
			e.Msg = needsUnit(lookup(raw, e.Key))
		}
		errs = append(errs, e)
		failed[e.Key] = true
		if e.Line <= 0 || tries >= 100 {
			return nil, &Errors{List: errs}
		}
		work = blankLine(work, e.Line)
		c = Default()
		md, err = toml.Decode(string(work), &c)
		if err != nil && e.Line == lineOf(err, path, pos) {
			return nil, &Errors{List: errs} // no progress
		}
	}
	c.Path = path
	c.pos = pos
	for _, k := range md.Undecoded() {
		// Keys in arrays of tables come without their index: report each occurrence.
		for _, key := range pos.occurrences(k.String()) {
			errs = append(errs, &Error{File: path, Line: pos.line(key), Key: key,
				Msg: "unknown key (expected one of: " + knownKeys(k) + ")"})
		}
	}
	for _, e := range unitlessDurations(path, pos, raw, reflect.TypeOf(c), "") {
		if !failed[e.Key] {
			errs = append(errs, e)
			failed[e.Key] = true
		}
	}
	for _, e := range append(append(c.validate(pos), c.validateAlerts(pos)...), c.validateRuleControl(pos)...) {
		if !failed[e.Key] {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return &c, &Errors{List: errs}
	}
	return &c, nil
}

// Line is the line of key ("alerts.sink[0].ca_file") in the file the configuration
// was read from, or of its closest parent table; 0 if unknown.
func (c *Config) Line(key string) int { return c.pos.line(key) }

// Errors is every problem found in one file.
type Errors struct{ List []*Error }

func (e *Errors) Error() string {
	s := ""
	for i, x := range e.List {
		if i > 0 {
			s += "\n"
		}
		s += x.Error()
	}
	return s
}

// Unwrap lets errors.As find the first *Error.
func (e *Errors) Unwrap() []error {
	out := make([]error, len(e.List))
	for i, x := range e.List {
		out[i] = x
	}
	return out
}

// Error is one problem in a configuration file.
type Error struct {
	File string
	Line int // 0 when unknown
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key != "" {
		return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

// IsConfigError reports whether err came from a bad configuration file (as opposed to
// one that could not be read).
func IsConfigError(err error) bool {
	var e *Errors
	return errors.As(err, &e)
}
