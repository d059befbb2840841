package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// Published values (Xen 4.0.1, mean of ten runs, milliseconds), by position of the
// varied size: 1024, 512, 256 MiB. Series "domm": Domain M varied, target 1024 MiB
// (tables 1 and 3); series "target": target varied, Domain M 1024 MiB (tables 2 and 4).
// The total migration times are published as figures only (figures 3 and 4).
var published = map[string]map[string][3]float64{
	"domm": {
		"P1": {74, 5200, 7736}, "P2": {92, 18, 14}, "P3": {0, 0, 0}, "P4": {69, 51, 25},
		"downtime": {1055, 870, 786}, "syncwait": {219, 108, 63},
	},
	"target": {
		"P1": {74, 0, 0}, "P2": {92, 5109, 7696}, "P3": {0, 0, 0}, "P4": {69, 101, 51},
		"downtime": {1112, 5971, 8493}, "syncwait": {219, 5268, 7780},
	},
}

// ParseRate turns a tc rate ("1gbit", "500mbit") into bytes/s.
func ParseRate(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(strings.ToLower(s), u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				return 0, fmt.Errorf("bad rate %q", s)
			}
			return int64(f * u.mult / 8), nil
		}
	}
	return 0, fmt.Errorf("rate %q: want NNgbit, NNmbit or NNkbit", s)
}

// cell is the mean of a cell's successful runs; a figure that some of them could not
// measure is the mean of those that did, and absent when none did.
type cell struct {
	n, failed             int
	total, downtime, wait mean
	p                     [4]mean
	gap                   mean
	held                  int
	// minMargin is the smallest P1 margin (Domain M's STOP after the target's).
	minMargin syncpoint.Figure
}

// mean averages the measured figures added to it.
type mean struct {
	sum time.Duration
	n   int
}

func (m *mean) add(f syncpoint.Figure) {
	if d, ok := f.Get(); ok {
		m.sum += d
		m.n++
	}
}

// dur is the mean, 0 when nothing was measured (check n).
func (m mean) dur() time.Duration {
	if m.n == 0 {
		return 0
	}
	return m.sum / time.Duration(m.n)
}

func (m mean) value() syncpoint.Figure {
	if m.n == 0 {
		return syncpoint.Figure{}
	}
	return syncpoint.Measured(m.sum / time.Duration(m.n))
}

type key struct {
	net, mode string
	t, m      int
}

func aggregate(runs []Run) map[key]*cell {
	cells := map[key]*cell{}
	for _, r := range runs {
		k := key{r.Net, r.Mode, r.TargetMiB, r.DomMMiB}
		c := cells[k]
		if c == nil {
			c = &cell{}
			cells[k] = c
		}
		if r.Err != "" {
			c.failed++
			continue
		}
		if d, ok := r.Result.P1Margin.Get(); ok {
			if cur, seen := c.minMargin.Get(); !seen || d < cur {
				c.minMargin = r.Result.P1Margin
			}
		}
		c.n++
		c.total.add(r.Result.Total)
		c.downtime.add(r.Result.TargetDowntime)
		c.wait.add(r.Result.SyncWait)
		c.gap.add(r.Result.Gap)
		for i := range c.p {
			c.p[i].add(r.Result.Waits[i])
		}
		if r.Result.Held {
			c.held++
		}
	}
	return cells
}

// series returns the (target, domm) pairs of a series in column order.
func (o Options) series(name string) [][2]int {
	var ps [][2]int
	for _, s := range o.Sizes {
		if name == "domm" {
			ps = append(ps, [2]int{o.Fixed, s})
		} else {
			ps = append(ps, [2]int{s, o.Fixed})
		}
	}
	return ps
}

// Tables renders the results like the published tables, published values in brackets.
func Tables(o Options, runs []Run) string {
	cells := aggregate(runs)
	var b strings.Builder
	for _, net := range o.Nets {
		for _, series := range []string{"domm", "target"} {
			tableFor(&b, o, cells, net, series)
		}
		beat(&b, o, cells, net)
	}
	return b.String()
}

func tableFor(b *strings.Builder, o Options, cells map[key]*cell, net, series string) {
	varied, fixed := "Domain M", "target"
	if series == "target" {
		varied, fixed = "target", "Domain M"
	}
	link := "loopback, unshaped"
	if net == "shaped" {
		link = "veth between two network namespaces, tc tbf " + o.Rate
	}
	fmt.Fprintf(b, "\n== %s: %s memory varied, %s %d MiB (%s); %d run(s) per cell ==\n", net, varied, fixed, o.Fixed, link, o.Reps)
	fmt.Fprintf(b, "   published (Xen 4.0.1, 1024/512/256 MiB, 10 runs) in [brackets], by column position\n")
	ps := o.series(series)
	fmt.Fprintf(b, "%-26s", "")
	for _, p := range ps {
		v := p[1]
		if series == "target" {
			v = p[0]
		}
		fmt.Fprintf(b, "%18s", fmt.Sprintf("%d MiB", v))
	}
	b.WriteString("\n")
	row := func(label, mode string, get func(*cell) syncpoint.Figure, pub string) {
		fmt.Fprintf(b, "%-26s", label)
		for i, p := range ps {
			c := cells[key{net, mode, p[0], p[1]}]
			s := "-"
			if c != nil && c.n > 0 {
				s = get(c).Ms() // "n/a" where no run measured it
			} else if c != nil {
				s = "failed"
			}
			if pub != "" && i < 3 {
				s += fmt.Sprintf(" [%g]", published[series][pub][i])
			}
			fmt.Fprintf(b, "%18s", s)
		}
		b.WriteString("\n")
	}
	for _, m := range o.Modes {
		row("total ms "+m.String(), m.String(), func(c *cell) syncpoint.Figure { return c.total.value() }, "")
	}
	b.WriteString("   (published totals: figures 3/4 only, no numbers in the text)\n")
	for _, m := range o.Modes {
		if m == syncpoint.NoSync {
			continue
		}
		pub := func(s string) string {
			if m == syncpoint.Sync {
				return s
			}
			return ""
		}
		for i := range 4 {
			i := i
			row(fmt.Sprintf("P%d wait ms %s", i+1, m), m.String(), func(c *cell) syncpoint.Figure { return c.p[i].value() }, pub(fmt.Sprintf("P%d", i+1)))
		}
		row("downtime ms "+m.String(), m.String(), func(c *cell) syncpoint.Figure { return c.downtime.value() }, pub("downtime"))
		row("  sync-wait part "+m.String(), m.String(), func(c *cell) syncpoint.Figure { return c.wait.value() }, pub("syncwait"))
	}
	for _, m := range o.Modes {
		if m == syncpoint.NoSync {
			row("downtime ms nosync", m.String(), func(c *cell) syncpoint.Figure { return c.downtime.value() }, "")
		}
	}
	for _, m := range o.Modes {
		row("P1 margin ms (min) "+m.String(), m.String(), func(c *cell) syncpoint.Figure { return c.minMargin }, "")
	}
	for _, m := range o.Modes {
		row("monitoring gap ms "+m.String(), m.String(), func(c *cell) syncpoint.Figure { return c.gap.value() }, "")
	}
}

// beat checks the goals for a target smaller than Domain M, paced: downtime within 1.5×
// of the equal-size paced case (the ratio to equal-size sync is printed too), total
// within 10% of nosync.
func beat(b *strings.Builder, o Options, cells map[key]*cell, net string) {
	eqS, eqP := cells[key{net, "sync", o.Fixed, o.Fixed}], cells[key{net, "paced", o.Fixed, o.Fixed}]
	if eqP == nil || eqP.downtime.n == 0 || eqS == nil || eqS.downtime.n == 0 {
		return
	}
	fmt.Fprintf(b, "\n-- %s: paced vs goals (equal-size downtime: sync %d ms, paced %d ms) --\n", net, eqS.downtime.dur().Milliseconds(), eqP.downtime.dur().Milliseconds())
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	for _, s := range o.Sizes {
		if s >= o.Fixed {
			continue
		}
		p, ns, sy := cells[key{net, "paced", s, o.Fixed}], cells[key{net, "nosync", s, o.Fixed}], cells[key{net, "sync", s, o.Fixed}]
		if p == nil || p.downtime.n == 0 || p.total.n == 0 || ns == nil || ns.total.n == 0 {
			continue
		}
		dr := float64(p.downtime.dur()) / float64(eqP.downtime.dur())
		tr := float64(p.total.dur())/float64(ns.total.dur()) - 1
		naive := ""
		if sy != nil && sy.downtime.n > 0 && sy.total.n > 0 {
			naive = fmt.Sprintf("; naive sync: downtime %.1fx equal-size sync, total %+.0f%%", float64(sy.downtime.dur())/float64(eqS.downtime.dur()), 100*(float64(sy.total.dur())/float64(ns.total.dur())-1))
		}
		fmt.Fprintf(b, "target %d MiB: downtime %d ms = %.2fx equal-size paced, %.2fx equal-size sync (goal <= 1.5x: %s); total %d ms vs nosync %d ms = %+.1f%% (goal <= +10%%: %s)%s\n",
			s, p.downtime.dur().Milliseconds(), dr, float64(p.downtime.dur())/float64(eqS.downtime.dur()), verdict(dr <= 1.5),
			p.total.dur().Milliseconds(), ns.total.dur().Milliseconds(), 100*tr, verdict(tr <= 0.10), naive)
	}
}
