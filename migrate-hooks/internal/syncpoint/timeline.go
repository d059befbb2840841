package syncpoint

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Subjects of the invariant.
const (
	SubjectTarget     = "target"
	SubjectDomM       = "domm"
	SubjectSupervisor = "supervisor"
	// SubjectEnd marks the end of observation: a violation still open then is counted
	// up to it. Without it, the record's last change ends the observation.
	SubjectEnd = "end"
)

// Change is one entry of a co-migration's timeline: a process of a subject came up or
// went down. For the supervisor "up" means monitoring.
type Change struct {
	Time    time.Time `json:"time"`
	Subject string    `json:"subject"`
	Where   string    `json:"where"` // process, e.g. "src/target"
	Up      bool      `json:"up"`
	What    string    `json:"what"` // what was observed, e.g. "RESUME", "prepare sent"
}

// Timeline is a co-migration's changes in time order.
type Timeline []Change

// Violation is an interval in which the target ran unwatched. Open is set when it had
// not ended when observation ended: To is then the end of observation, and the target
// may still be unwatched.
type Violation struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	Why  string    `json:"why"`
	Open bool      `json:"open,omitempty"`
}

// Check verifies the invariant over tl: whenever any process of the target is running,
// some process of Domain M is running and the supervisor is monitoring. Changes at the
// same instant are applied together before the check. It returns the violations and
// their total duration (the monitoring gap). A violation still open at the end of the
// record counts until the end of observation (SubjectEnd, else the last change).
func (tl Timeline) Check() ([]Violation, time.Duration) {
	sorted := append(Timeline(nil), tl...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Time.Before(sorted[j].Time) })
	up := map[string]map[string]bool{SubjectTarget: {}, SubjectDomM: {}, SubjectSupervisor: {}}
	any := func(s string) bool {
		for _, v := range up[s] {
			if v {
				return true
			}
		}
		return false
	}
	var out []Violation
	var open *Violation
	var gap time.Duration
	for i := 0; i < len(sorted); {
		t := sorted[i].Time
		for ; i < len(sorted) && sorted[i].Time.Equal(t); i++ {
			c := sorted[i]
			if c.Subject == SubjectEnd {
				continue
			}
			if up[c.Subject] == nil {
				up[c.Subject] = map[string]bool{}
			}
			up[c.Subject][c.Where] = c.Up
		}
		bad := any(SubjectTarget) && !(any(SubjectDomM) && any(SubjectSupervisor))
		switch {
		case bad && open == nil:
			why := []string{}
			if !any(SubjectDomM) {
				why = append(why, "domain M stopped")
			}
			if !any(SubjectSupervisor) {
				why = append(why, "supervisor not monitoring")
			}
			open = &Violation{From: t, Why: "target running while " + strings.Join(why, " and ")}
		case !bad && open != nil:
			open.To = t
			gap += t.Sub(open.From)
			out = append(out, *open)
			open = nil
		}
	}
	if open != nil && len(sorted) > 0 {
		// Still unwatched when observation ended: count it to the end, and say so.
		open.To, open.Open = sorted[len(sorted)-1].Time, true
		gap += open.To.Sub(open.From)
		out = append(out, *open)
	}
	return out, gap
}

// Err returns an error describing tl's violations, or nil.
func (tl Timeline) Err() error {
	vs, gap := tl.Check()
	if len(vs) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "invariant violated %d time(s), gap %v:", len(vs), gap)
	for _, v := range vs {
		open := ""
		if v.Open {
			open = ", still open when observation ended"
		}
		fmt.Fprintf(&b, " [%s +%v: %s%s]", v.From.Format("15:04:05.000000"), v.To.Sub(v.From), v.Why, open)
	}
	return fmt.Errorf("%s", b.String())
}

// lifecycle turns a process's events since t0 into changes; up0 is its state at t0.
func lifecycle(subject string, vm VM, t0 time.Time, up0 bool) Timeline {
	tl := Timeline{{Time: t0, Subject: subject, Where: vm.Where(), Up: up0, What: "initial"}}
	for _, e := range vm.Events() {
		if e.Time.Before(t0) {
			continue
		}
		what := e.Name
		if e.Detail != "" {
			what += ": " + e.Detail
		}
		switch e.Name {
		case "STOP", "SHUTDOWN":
			tl = append(tl, Change{e.Time, subject, vm.Where(), false, what})
		case "RESUME":
			tl = append(tl, Change{e.Time, subject, vm.Where(), true, what})
		}
	}
	return tl
}
