package config

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/internal/alert"
	"github.com/domainm/domainm/appliance/internal/metrics"
	"github.com/domainm/domainm/internal/units"
	"github.com/domainm/domainm/memscan"
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// validate checks values the types alone do not, and fills derived defaults.
func (c *Config) validate(pos positions) []*Error {
	var errs []*Error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{File: c.Path, Line: pos.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	t := &c.Target
	if t.Name == "" {
		bad("target.name", "missing: expected the target VM's name (used in every alert)")
	}
	if t.UUID != "" && !uuidRE.MatchString(t.UUID) {
		bad("target.uuid", "expected a UUID like 123e4567-e89b-12d3-a456-426614174000, got %q", t.UUID)
	}
	switch kind, arg, _ := strings.Cut(t.Memory, ":"); {
	case t.Memory == "":
		bad("target.memory", "missing: expected a memory source spec (file:PATH, elf:PATH, xen:DOMID, xen:granted, nvdimm:handle=N or disk:PATH)")
	case kind != "file" && kind != "elf" && kind != "xen" && kind != "nvdimm" && kind != "disk" || arg == "":
		bad("target.memory", "expected a memory source spec (file:PATH, elf:PATH, xen:DOMID, xen:granted, nvdimm:handle=N or disk:PATH), got %q", t.Memory)
	case kind == "nvdimm":
		if _, err := memscan.ParseNVDIMM(arg); err != nil {
			bad("target.memory", "expected nvdimm:handle=N, N the nvdimm's NFIT handle (QEMU slot + 1), got %q", t.Memory)
		}
	}
	if _, err := memscan.ParseLayout(t.Layout); err != nil || t.Layout == "" {
		bad("target.layout", "expected a layout (flat, q35, pc, split:LOWMEM or ranges:GPA+SIZE@OFF,...), got %q", t.Layout)
	} else if kind, _, _ := strings.Cut(t.Memory, ":"); kind != "file" && kind != "nvdimm" && kind != "disk" && t.Layout != "flat" {
		bad("target.layout", "a layout other than flat applies only to file:, nvdimm: and disk: memory sources, not %q", t.Memory)
	}
	if kind, arg, _ := strings.Cut(t.Memory, ":"); kind == "xen" {
		if n, err := strconv.ParseUint(arg, 10, 16); arg != "granted" && (err != nil || n == 0) {
			bad("target.memory", "expected xen:DOMID with a domain id from 1 to 65535, or xen:granted (the domain dom0's domainm-xen grant wrote to xenstore domainm/target), got %q", t.Memory)
		}
	}
	if t.DiskFormat != "raw" && t.DiskFormat != "qcow2" {
		bad("target.disk_format", `expected "raw" or "qcow2", got %q`, t.DiskFormat)
	}
	if t.Partition != "auto" {
		if n, err := strconv.Atoi(t.Partition); err != nil || n < 1 {
			bad("target.partition", `expected "auto" or a partition number (1, 2, ...), got %q`, t.Partition)
		}
	}
	if t.Baseline == "" && c.State.Dir != "" {
		t.Baseline = filepath.Join(c.State.Dir, "baseline.db")
	}

	m := &c.Memory
	atLeast(bad, "memory.interval", m.Interval, time.Second)
	atLeast(bad, "memory.stall_timeout", m.StallTimeout, time.Second)
	if m.YaraTimeout < time.Second || m.YaraTimeout%time.Second != 0 {
		// libyara 4.2.3 takes its time limit in whole seconds; less than one is none.
		bad("memory.yara_timeout", "expected whole seconds, at least 1, such as \"30s\", got %v", m.YaraTimeout)
	}
	if m.MaxMatchesPerRule < 1 || m.MaxMatchesPerRule > 1_000_000 {
		bad("memory.max_matches_per_rule", "expected a number of matches from 1 to 1000000, got %d", m.MaxMatchesPerRule)
	}
	if m.RescanAfterPasses < 1 || m.RescanAfterPasses > 10_000 {
		bad("memory.rescan_after_passes", "expected a number of passes from 1 (no reuse) to 10000, got %d", m.RescanAfterPasses)
	}
	if m.RunBudget < 0 || m.RunBudget > time.Second {
		bad("memory.run_budget", "expected a duration from \"0s\" (no bound: runs of 32 windows) to \"1s\", such as \"10ms\", got %v", m.RunBudget)
	}
	if m.Workers < 1 || m.Workers > 256 {
		bad("memory.workers", "expected a number of scan workers from 1 to 256, got %d", m.Workers)
	}
	if m.BlockSize < 64<<10 || m.BlockSize > 1<<30 || m.BlockSize%4096 != 0 {
		bad("memory.block_size", "expected a multiple of 4KiB from 64KiB to 1GiB, got %d bytes", m.BlockSize)
	}
	if m.Overlap >= m.BlockSize/2 {
		bad("memory.overlap", "expected less than half of memory.block_size (%d bytes), got %d bytes", m.BlockSize/2, m.Overlap)
	}
	atLeast(bad, "disk.interval", c.Disk.Interval, time.Second)
	atLeast(bad, "rules.debounce", c.Rules.Debounce, 0)
	atLeast(bad, "control.quiesce_timeout", c.Control.QuiesceTimeout, time.Second)

	absolute(bad, "target.disk", t.Disk, true)
	absolute(bad, "target.policy", t.Policy, true)
	absolute(bad, "target.baseline", t.Baseline, true)
	absolute(bad, "rules.dir", c.Rules.Dir, false)
	c.Rules.Dir = filepath.Clean(c.Rules.Dir) // "/etc/domainm/rules/" names the same folder
	absolute(bad, "state.dir", c.State.Dir, false)
	absolute(bad, "control.socket", c.Control.Socket, true)
	absolute(bad, "control.device", c.Control.Device, true)
	if _, err := ParseLogLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if _, err := ParseLogFormat(c.Log.Format); err != nil {
		bad("log.format", "%v", err)
	}
	if l := c.Metrics.Listen; l != "" {
		if _, port, err := net.SplitHostPort(l); err != nil || port == "" {
			bad("metrics.listen", `expected HOST:PORT such as "127.0.0.1:9477", or "" for off, got %q`, l)
		} else if err := metrics.CheckListen(l, c.Metrics.AllowRemote); err != nil {
			bad("metrics.listen", "expected a loopback address such as \"127.0.0.1:9477\" (or allow_remote = true): %v", err)
		}
	}
	return errs
}

func atLeast(bad func(string, string, ...any), key string, d, min time.Duration) {
	if d < min {
		bad(key, "expected a duration of at least %v such as \"5m\" or \"30s\", got %v", min, d)
	}
}

func absolute(bad func(string, string, ...any), key, path string, emptyOK bool) {
	switch {
	case path == "" && emptyOK:
	case path == "":
		bad(key, "expected an absolute path, got an empty string")
	case !filepath.IsAbs(path):
		bad(key, "expected an absolute path, got %q", path)
	}
}

// Size is a number of bytes; in the file an integer (bytes) or a string with a unit,
// parsed as on the command line (units.ParseSize): "4MiB", "64KiB", "1G" (K, M, G, T
// alone are powers of 1024), "500MB" (kB, MB, GB, TB are powers of 1000).
type Size int64

// UnmarshalText parses a size.
func (s *Size) UnmarshalText(b []byte) error {
	n, err := units.ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// validateAlerts runs the alert package's checks (which also fill its defaults) and
// places each problem at its line.
func (c *Config) validateAlerts(pos positions) []*Error {
	err := c.Alerts.Validate()
	if err == nil {
		return nil
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	var errs []*Error
	for _, e := range list {
		var ce *alert.ConfigError
		if errors.As(e, &ce) {
			key := "alerts." + ce.Key
			errs = append(errs, &Error{File: c.Path, Line: pos.line(key), Key: key, Msg: ce.Msg})
		} else {
			errs = append(errs, &Error{File: c.Path, Line: pos.line("alerts"), Key: "alerts", Msg: e.Error()})
		}
	}
	return errs
}
