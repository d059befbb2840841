package alert

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// DefaultAggregateAbove is how many alerts of one kind under one folder, from one
// check, are alerted one by one; more become a summary (Aggregate).
const DefaultAggregateAbove = 20

// aggregateListed bounds the paths a summary names.
const aggregateListed = 10

// Aggregate turns a burst of file alerts of one kind (event.action: file-added,
// file-changed, file-removed, file-match) under one folder into one summary event plus
// the detail: when more than above events of one action have their file in the same
// folder (the folder's own event counts with them, so 300 new files in a new folder
// are one group), a summary event (action ACTION-summary, e.g. file-added-summary) at
// the highest severity of the group comes first, naming the folder, the count and the
// first paths; the group's own events follow at info severity, each naming the
// summary's event.id in domainm.meta.summary_id, so a SIEM keeps every detail while
// a sink with min_severity above info gets only the summary. above <= 0 turns it off.
// Events of other kinds, and groups of at most above, pass unchanged and in order.
func Aggregate(evs []Event, above int) []Event {
	if above <= 0 || len(evs) <= above {
		return evs
	}
	type key struct{ action, dir string }
	groups := map[key][]int{}
	dirOf := func(e *Event) (string, bool) {
		if e.File == nil || e.File.Path == "" || !strings.HasPrefix(e.Event.Action, "file-") {
			return "", false
		}
		return path.Dir(e.File.Path), true
	}
	for i := range evs {
		if d, ok := dirOf(&evs[i]); ok {
			k := key{evs[i].Event.Action, d}
			groups[k] = append(groups[k], i)
		}
	}
	// A folder that is itself added or removed joins the group of its entries.
	for i := range evs {
		e := &evs[i]
		if e.File == nil {
			continue
		}
		k := key{e.Event.Action, e.File.Path}
		if g, ok := groups[k]; ok && len(g) > above {
			own := key{e.Event.Action, path.Dir(e.File.Path)}
			groups[own] = slices.DeleteFunc(groups[own], func(j int) bool { return j == i })
			groups[k] = append(g, i)
		}
	}
	summaries := map[int]Event{} // by the index of the group's first event
	inGroup := map[int]bool{}
	for k, g := range groups {
		if len(g) <= above {
			continue
		}
		slices.Sort(g)
		sum := summary(evs, g, k.action, k.dir, above)
		summaries[g[0]] = sum
		for _, i := range g {
			inGroup[i] = true
			e := &evs[i]
			e.SetSeverity(SevInfo)
			if e.DomainM.Meta == nil {
				e.DomainM.Meta = MetaFields{}
			}
			e.DomainM.Meta["summary_id"] = sum.Event.ID
			e.Event.ID = occurrenceID(e)
		}
	}
	if len(summaries) == 0 {
		return evs
	}
	out := make([]Event, 0, len(evs)+len(summaries))
	for i := range evs {
		if s, ok := summaries[i]; ok {
			out = append(out, s)
		}
		out = append(out, evs[i])
	}
	return out
}

// summary builds the summary event of the group g (indexes into evs, sorted).
func summary(evs []Event, g []int, action, dir string, above int) Event {
	first := evs[g[0]]
	s := first // target, host, observer, timestamp, category of the group
	s.File = &File{Path: dir, Name: path.Base(dir), Type: "dir"}
	s.Rule, s.Process, s.Error, s.Threat = nil, nil, nil, nil
	s.Tags = nil
	s.DomainM.Matches, s.DomainM.MatchesN, s.DomainM.MatchesCut, s.DomainM.Changes = nil, 0, 0, nil
	sev := SevInfo
	var paths []string
	for _, i := range g {
		if v := evs[i].Severity(); v < sev {
			sev = v
		}
		if len(paths) < aggregateListed {
			paths = append(paths, evs[i].File.Path)
		}
	}
	s.Event.Action = action + "-summary"
	s.Event.Type = slices.Clone(first.Event.Type)
	what := strings.TrimPrefix(action, "file-")
	s.Message = bound(fmt.Sprintf("%d files %s under %s on %s (more than %d of one kind under one folder: one summary, the %d alerts follow at info): %s%s",
		len(g), what, dir, targetName(&first), above, len(g), strings.Join(paths, ", "), more(len(g)-len(paths))))
	s.DomainM.State = what
	s.DomainM.Meta = MetaFields{"count": strconv.Itoa(len(g)), "folder": bound(dir), "paths": bound(strings.Join(paths, " "))}
	who := ""
	if t := first.DomainM.Target; t != nil {
		who = t.UUID + t.Name
	}
	s.DomainM.FindingID = hashID("summary", action, dir, who, strconv.Itoa(len(g)), paths[0], paths[len(paths)-1])
	s.SetSeverity(sev)
	s.Event.ID = occurrenceID(&s)
	return s
}

func targetName(e *Event) string {
	if e.DomainM.Target != nil && e.DomainM.Target.Name != "" {
		return e.DomainM.Target.Name
	}
	return "the target"
}

func more(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" and %d more", n)
}
