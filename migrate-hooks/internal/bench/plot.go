package bench

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plot writes, per net and series, total migration time and target downtime against the
// varied size, one line per mode. It returns the files written.
func Plot(o Options, runs []Run) ([]string, error) {
	cells := aggregate(runs)
	var files []string
	for _, net := range o.Nets {
		for _, series := range []string{"domm", "target"} {
			for _, metric := range []struct {
				name string
				get  func(*cell) mean
			}{{"total", func(c *cell) mean { return c.total }}, {"downtime", func(c *cell) mean { return c.downtime }}} {
				f := filepath.Join(o.Out, fmt.Sprintf("%s-%s-varied-%s.png", net, series, metric.name))
				if err := plotOne(o, cells, net, series, metric.name, metric.get, f); err != nil {
					return files, err
				}
				files = append(files, f)
			}
		}
	}
	return files, nil
}

func plotOne(o Options, cells map[key]*cell, net, series, metric string, get func(*cell) mean, file string) error {
	p := plot.New()
	varied := map[string]string{"domm": "Domain M", "target": "target"}[series]
	p.Title.Text = fmt.Sprintf("%s, %s varied (other %d MiB): %s", net, varied, o.Fixed, metric)
	p.X.Label.Text = varied + " memory (MiB)"
	p.Y.Label.Text = metric + " (s)"
	p.Y.Min = 0
	p.Legend.Top = true
	var lines []any
	maxY := 0.0
	for _, m := range o.Modes {
		var pts plotter.XYs
		for _, pr := range o.series(series) {
			c := cells[key{net, m.String(), pr[0], pr[1]}]
			if c == nil || get(c).n == 0 {
				continue // no run measured it: no point, rather than one at 0
			}
			x := pr[1]
			if series == "target" {
				x = pr[0]
			}
			pts = append(pts, plotter.XY{X: float64(x), Y: get(c).dur().Seconds()})
			maxY = max(maxY, get(c).dur().Seconds())
		}
		if len(pts) > 0 {
			lines = append(lines, m.String(), pts)
		}
	}
	if len(lines) == 0 {
		return nil
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return err
	}
	p.Y.Max = maxY * 1.35 // headroom, so the legend (top right) does not cover the lines
	return p.Save(5*vg.Inch, 3.5*vg.Inch, file)
}
