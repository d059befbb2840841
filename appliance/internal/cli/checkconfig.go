package cli

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/domainm/domainm/appliance/internal/config"
	"github.com/domainm/domainm/detectors/integrity"
	"github.com/domainm/domainm/detectors/yara"
	"github.com/domainm/domainm/memscan"
)

// A problem found by domainm run --check-config: in the configuration file (File,
// Line, Key) or in what it points at (rules, policy, certificates, memory source). A
// warning does not fail the check: the daemon starts and reports it (a memory source
// that is not there yet: the target may boot later; a rule file that does not compile:
// left out, alerted, a rules problem in status).
type problem struct {
	File    string
	Line    int
	Key     string
	Msg     string
	Warning bool
}

func (p problem) String() string {
	loc := p.File
	if p.Line > 0 {
		loc = fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	kind := ""
	if p.Warning {
		kind = "warning: "
	}
	if p.Key == "" {
		return fmt.Sprintf("%s: %s%s", loc, kind, p.Msg)
	}
	return fmt.Sprintf("%s: %s: %s%s", loc, p.Key, kind, p.Msg)
}

// certExpiryWarning: a certificate that expires within this is a warning.
const certExpiryWarning = 30 * 24 * time.Hour

// checkConfig is domainm run --check-config: every problem of the file and of what it
// points at, one line each, then a summary. Exit 2 if any is an error, 0 otherwise.
func checkConfig(w io.Writer, path string, now time.Time) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ExitError, fmt.Errorf("reading config: %w", err)
	}
	cfg, perrs := config.ParseAll(path, data)
	var probs []problem
	if perrs != nil {
		for _, e := range perrs.List {
			probs = append(probs, problem{File: e.File, Line: e.Line, Key: e.Key, Msg: e.Msg})
		}
	}
	if cfg != nil {
		probs = append(probs, checkTargets(cfg, now)...)
	}
	sort.SliceStable(probs, func(i, j int) bool {
		if probs[i].File != probs[j].File {
			return probs[i].File == path // the configuration file first, then rule files
		}
		return probs[i].Line < probs[j].Line
	})
	nerr, nwarn := 0, 0
	for _, p := range probs {
		fmt.Fprintln(w, p)
		if p.Warning {
			nwarn++
		} else {
			nerr++
		}
	}
	if nerr > 0 {
		fmt.Fprintf(w, "%s: %d error(s), %d warning(s)\n", path, nerr, nwarn)
		return ExitError, nil
	}
	if nwarn > 0 {
		fmt.Fprintf(w, "%s: configuration is valid, %d warning(s)\n", path, nwarn)
	} else {
		fmt.Fprintf(w, "%s: configuration is valid\n", path)
	}
	return ExitClean, nil
}

// checkTargets checks what the configuration points at: the rules folder and its
// rules, the integrity policy, the sinks' certificates, the memory source and disk.
func checkTargets(cfg *config.Config, now time.Time) []problem {
	var probs []problem
	at := func(key string, warning bool, format string, args ...any) {
		probs = append(probs, problem{File: cfg.Path, Line: cfg.Line(key), Key: key, Msg: fmt.Sprintf(format, args...), Warning: warning})
	}

	// Rules: a missing folder stops domainm run; a broken file is left out (warning).
	dir := cfg.Rules.Dir
	switch st, err := os.Stat(dir); {
	case err != nil:
		at("rules.dir", false, "%v (domainm run does not start without its rules folder)", err)
	case !st.IsDir():
		at("rules.dir", false, "%s is not a folder", dir)
	default:
		r, err := yara.Compile(dir)
		var ce *yara.CompileError
		switch {
		case errors.Is(err, yara.ErrNoRules):
			at("rules.dir", true, "no rule files (*.yar, *.yara) in %s: memory passes would find nothing (rules-empty)", dir)
		case errors.As(err, &ce):
			for _, e := range ce.Errors {
				probs = append(probs, problem{File: filepath.Join(dir, e.File), Line: e.Line, Warning: true,
					Msg: "does not compile, left out by domainm run: " + e.Text})
			}
			loaded := 0
			if r != nil {
				loaded = r.Count()
			}
			at("rules.dir", true, "%d rule error(s) in %s; %d rules load (domainm rules check %s for details)", len(ce.Errors), dir, loaded, dir)
		case err != nil:
			at("rules.dir", false, "%v", err)
		}
	}

	if p := cfg.Target.Policy; p != "" {
		if _, err := integrity.LoadPolicy(p); err != nil {
			at("target.policy", false, "%v", err)
		}
	}

	for i, s := range cfg.Alerts.Sinks {
		key := fmt.Sprintf("alerts.sink[%d].", i)
		for _, f := range []struct{ key, file string }{{"ca_file", s.CAFile}, {"cert_file", s.CertFile}} {
			if f.file == "" {
				continue
			}
			for _, p := range checkCertFile(f.file, now) {
				at(key+f.key, p.Warning, "%s", p.Msg)
			}
		}
		if s.CertFile != "" && s.KeyFile != "" {
			if _, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile); err != nil && fileExists(s.CertFile) && fileExists(s.KeyFile) {
				at(key+"key_file", false, "%s does not go with %s: %v", s.KeyFile, s.CertFile, err)
			}
		}
	}

	// The memory source and the disk may appear later (the target boots after Domain
	// M): warnings; domainm run waits for them.
	switch kind, arg, _ := strings.Cut(cfg.Target.Memory, ":"); kind {
	case "file", "elf":
		if _, err := os.Stat(arg); err != nil {
			at("target.memory", true, "%v: domainm run waits for it (state waiting); the target may not have started yet", err)
		}
	case "nvdimm":
		if h, err := memscan.ParseNVDIMM(arg); err == nil {
			if _, err := memscan.FindNVDIMM(h); err != nil {
				at("target.memory", true, "%v: domainm run waits for it (state waiting, memory-source-missing); was this VM started with the target's RAM file as that nvdimm?", err)
			}
		}
	case "xen":
		if _, err := os.Stat("/dev/xen/privcmd"); err != nil {
			at("target.memory", true, "%v: Xen memory is read through /dev/xen/privcmd; is this a Xen domain with privileges over the target?", err)
		}
	}
	if d := cfg.Target.Disk; d != "" {
		if _, err := os.Stat(d); err != nil {
			at("target.disk", true, "%v: disk checks wait for it", err)
		}
	}
	return probs
}

// checkCertFile checks a PEM file of certificates: it parses, and each certificate
// is valid now (an error) and for the next 30 days (a warning). A file that cannot be
// read is already an error of the configuration.
func checkCertFile(file string, now time.Time) []problem {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var probs []problem
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		n++
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			probs = append(probs, problem{Msg: fmt.Sprintf("%s: certificate %d does not parse: %v", file, n, err)})
			continue
		}
		name := fmt.Sprintf("%s: certificate %q", file, c.Subject.String())
		switch {
		case now.After(c.NotAfter):
			probs = append(probs, problem{Msg: fmt.Sprintf("%s expired on %s", name, c.NotAfter.UTC().Format(time.RFC3339))})
		case now.Before(c.NotBefore):
			probs = append(probs, problem{Msg: fmt.Sprintf("%s is not valid before %s", name, c.NotBefore.UTC().Format(time.RFC3339))})
		case now.Add(certExpiryWarning).After(c.NotAfter):
			probs = append(probs, problem{Warning: true, Msg: fmt.Sprintf("%s expires on %s, in less than 30 days", name, c.NotAfter.UTC().Format(time.RFC3339))})
		}
	}
	if n == 0 {
		probs = append(probs, problem{Msg: fmt.Sprintf("%s: no PEM certificate in it", file)})
	}
	return probs
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
