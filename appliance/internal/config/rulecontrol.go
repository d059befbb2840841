package config

import (
	"fmt"
	"path"
	"strings"
)

// RuleException is one [[rules.exception]] table: findings of Rule on Target, or at
// Path, are not alerted (an allowlist entry, as Wazuh's and AIDE's operators keep
// them). Rule is a rule name, "namespace:rule", or a glob over either
// ("integrity-*" for every file-integrity change); Target a target's name or UUID;
// Path a file path or glob ("/var/www/uploads/*"). At least one of Target and Path.
type RuleException struct {
	Rule   string `toml:"rule"`
	Target string `toml:"target"`
	Path   string `toml:"path"`
	Reason string `toml:"reason"` // why (shown in status)
}

func (e RuleException) String() string {
	var on []string
	if e.Target != "" {
		on = append(on, "target "+e.Target)
	}
	if e.Path != "" {
		on = append(on, "path "+e.Path)
	}
	s := e.Rule + " on " + strings.Join(on, ", ")
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// validateRuleControl checks rules.disable and rules.exception.
func (c *Config) validateRuleControl(pos positions) []*Error {
	var errs []*Error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{File: c.Path, Line: pos.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	for i, d := range c.Rules.Disable {
		key := fmt.Sprintf("rules.disable[%d]", i)
		if pos.line(key) == 0 {
			key = "rules.disable"
		}
		switch tag, isTag := strings.CutPrefix(d, "tag:"); {
		case strings.TrimSpace(d) == "":
			bad(key, `expected a rule name, "namespace:rule" or "tag:TAG", got ""`)
		case isTag && tag == "":
			bad(key, `expected "tag:TAG" with a tag, got %q`, d)
		case !isTag && !validGlob(d):
			bad(key, "expected a rule name or glob, got %q", d)
		}
	}
	if n := c.Disk.AggregateAbove; n < 0 {
		bad("disk.aggregate_above", "expected a number of alerts (0: every change alerted on its own), got %d", n)
	}
	for i, e := range c.Rules.Exceptions {
		key := fmt.Sprintf("rules.exception[%d]", i)
		switch {
		case e.Rule == "":
			bad(key+".rule", `missing: expected the rule name ("namespace:rule", globs allowed: "integrity-*")`)
		case !validGlob(e.Rule):
			bad(key+".rule", "expected a rule name or glob, got %q", e.Rule)
		}
		if e.Target == "" && e.Path == "" {
			bad(key, "expected target or path (or both): an exception for a rule everywhere is rules.disable")
		}
		if e.Path != "" && (!strings.HasPrefix(e.Path, "/") || !validGlob(e.Path)) {
			bad(key+".path", "expected an absolute path or glob in the target's filesystem, got %q", e.Path)
		}
	}
	return errs
}

func validGlob(p string) bool {
	_, err := path.Match(p, "")
	return err == nil
}
