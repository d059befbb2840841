package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/domainm/domainm/appliance/control"
	"github.com/domainm/domainm/appliance/control/proto"
)

// printStatus writes domainm status's human summary of a status reply. Every line is
// always there, with zero values and "never" rather than left out, so an operator
// tells "nothing yet" from "not reported".
func printStatus(w io.Writer, r control.Response, now time.Time) error {
	d := r.Detail
	if d == nil {
		d = &proto.StatusDetail{}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }

	health := "healthy"
	if r.Health == nil || !r.Health.Healthy {
		health = "NOT healthy"
	}
	reason := ""
	if r.Health != nil && r.Health.Reason != "" {
		reason = ": " + r.Health.Reason
	}
	p("state:", "%s, %s%s", r.State, health, reason)
	if r.Health != nil && len(r.Health.Problems) > 0 {
		for _, pr := range r.Health.Problems {
			p("  problem:", "%s: %s (since %s)", pr.Code, pr.Message, when(pr.Since, now))
		}
	} else {
		p("  problems:", "none")
	}
	t := control.TargetInfo{}
	if r.Target != nil {
		t = *r.Target
	}
	p("target:", "%s (uuid %s, host %s)", dash(t.Name), dash(t.UUID), dash(t.Host))
	m := d.Memory
	p("memory:", "%s, layout %s, a pass every %s", dash(m.Source), dash(m.Layout), secs(m.IntervalSeconds))
	p("  last pass:", "%s, took %s, complete: %s", when(m.LastPassEnd, now), secs(m.LastPassSeconds), yesNo(m.LastPassComplete))
	p("  blocks:", "%d: %d scanned, %d unchanged, %d zero, %d unscanned (%s)",
		m.Blocks, m.BlocksScanned, m.BlocksUnchanged, m.BlocksZero, m.BlocksUnscanned, sizeUnits(m.BytesUnscanned))
	p("  passes:", "%d complete since the start; %d findings open", m.Passes, m.Findings)
	switch g := m.Guest; g.OS {
	case "":
		p("  guest:", "not derived yet (at the first pass over %s)", dash(m.Source))
	case "linux":
		p("  guest:", "linux %s, derived from %s %s; %d processes, %d page boundaries scanned virtually in the last pass; error: %s",
			g.Kernel, g.Source, when(g.DerivedAt, now), g.Processes, g.Seams, dash(g.Error))
	default:
		p("  guest:", "%s, tried on %s %s (%s): matches carry guest-physical addresses only, no virtual scan",
			g.OS, g.Source, when(g.DerivedAt, now), dash(g.Error))
	}
	ru := d.Rules
	p("rules:", "%d rules in %d files from %s (set %s, loaded %s)", ru.Count, ru.Files, dash(ru.Dir), dash(ru.ID), when(ru.Loaded, now))
	last := "never since the start"
	if ru.LastReload != "" {
		last = when(ru.LastReload, now) + ", " + ru.LastReloadResult
	}
	p("  last reload:", "%s; %d reloads, %d failed", last, ru.Reloads, ru.FailedReloads)
	if len(ru.BrokenFiles) == 0 {
		p("  broken files:", "none")
	}
	for _, b := range ru.BrokenFiles {
		p("  broken file:", "%s", b)
	}
	p("  disabled:", "%s", listOrNone(ru.Disabled))
	p("  exceptions:", "%s", listOrNone(ru.Exceptions))
	p("  suppressed:", "%d findings in the last memory pass, %d in the last disk check", ru.SuppressedMemory, ru.SuppressedDisk)
	dk := d.Disk
	if dk.Image == "" {
		p("disk:", "none configured (target.disk)")
	} else {
		p("disk:", "%s, a check every %s", dk.Image, secs(dk.IntervalSeconds))
		p("  last check:", "%s; %d checks since the start, failing: %s", when(dk.LastCheck, now), dk.Checks, yesNo(dk.Failing))
		age := "none yet (the first check records it)"
		if dk.BaselineAgeSeconds >= 0 {
			age = secs(dk.BaselineAgeSeconds) + " old"
		}
		p("  baseline:", "%s, %s", dk.Baseline, age)
	}
	if len(d.Sinks) == 0 {
		p("sinks:", "none configured ([[alerts.sink]])")
	}
	for _, s := range d.Sinks {
		up := "up"
		if !s.Up {
			up = "DOWN (or nothing sent yet)"
		}
		p("sink "+s.Name+":", "%s, %s; spooled %d (%s), oldest %s; held back by rate_limit %d; last delivered %s; last error: %s",
			s.Type, up, s.Spooled, sizeUnits(uint64(max(0, s.SpoolBytes))), secs(s.OldestAgeSeconds), s.HeldBack, when(s.LastDelivered, now), dash(s.LastError))
	}
	c := d.Config
	reload := "never since the start"
	if c.LastReload != "" {
		reload = when(c.LastReload, now) + ", ok"
		if c.ReloadError != "" {
			reload = when(c.LastReload, now) + ", FAILED (the running configuration stays): " + strings.ReplaceAll(c.ReloadError, "\n", "; ")
		}
	}
	p("config:", "%s; last reload %s", dash(c.Path), reload)
	needs := "none"
	if len(c.NeedsRestart) > 0 {
		needs = strings.Join(c.NeedsRestart, ", ")
	}
	p("  needs restart:", "%s", needs)
	p("version:", "%s, up %s (since %s)", dash(d.Version), secs(d.UptimeSeconds), dash(d.StartedAt))
	return tw.Flush()
}

// when is an RFC 3339 time with how long ago it was, or "never".
func when(ts string, now time.Time) string {
	if ts == "" {
		return "never"
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ts
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second))
}

func secs(s float64) string {
	d := time.Duration(s * float64(time.Second))
	if d >= time.Minute {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Millisecond).String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sizeUnits prints bytes with a binary unit: 0 B, 512 B, 4 KiB, 1.5 MiB.
func sizeUnits(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for x := n / unit; x >= unit && exp < 4; x /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + []string{"KiB", "MiB", "GiB", "TiB", "PiB"}[exp]
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, "; ")
}
