package xenlab

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/migrate-hooks/internal/syncpoint"
)

// Event is one line of a host's events.log: "EPOCH HOST NAME key=value ...".
type Event struct {
	Time time.Time
	Host string
	Name string
	Args map[string]string
	Line string
}

// ParseEvents reads an events.log. Lines that do not parse are skipped (the file is
// written by the lab's own script, but a host powered off mid-line leaves a torn one).
func ParseEvents(r io.Reader) ([]Event, error) {
	var out []Event
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		ev := Event{Time: time.Unix(0, int64(sec*1e9)), Host: f[1], Name: f[2], Args: map[string]string{}, Line: sc.Text()}
		for _, kv := range f[3:] {
			if k, v, ok := strings.Cut(kv, "="); ok {
				ev.Args[k] = strings.Trim(v, `"`)
			}
		}
		out = append(out, ev)
	}
	return out, sc.Err()
}

// Events reads host h's events from the run's out folder.
func (l *Lab) Events(h string) ([]Event, error) {
	f, err := os.Open(l.Run + "/out-" + h + "/events.log")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseEvents(f)
}

// Find returns the first event named name whose args include want (k=v pairs).
func Find(evs []Event, name string, want ...string) (Event, bool) {
next:
	for _, e := range evs {
		if e.Name != name {
			continue
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if e.Args[k] != v {
				continue next
			}
		}
		return e, true
	}
	return Event{}, false
}

// Figures are one co-migration's waits and costs, from host A's clock (every event at
// B is observed from A over ssh: a B event is stamped after it happened, a B start
// before, so the figures err on the long side).
type Figures struct {
	TargetMigration time.Duration // xl migrate -p target, start to end
	DomMMigration   time.Duration // xl migrate -p domainm, start to end
	P1, P2, P3, P4  time.Duration
	Downtime        time.Duration // target stopped at A (migration end) to unpaused at B
	Gap             time.Duration // time the target ran unwatched (Timeline.Check)
	Violations      []syncpoint.Violation
	Timeline        syncpoint.Timeline
}

// Compute derives the figures and the invariant's timeline from host A's events.
//
// The scheme (image/xen/run.sh): the target migrates first, arriving paused at B, while
// Domain M keeps monitoring it at A (P1: Domain M cannot stop first, since its
// migration starts only after the target's ended); prepare; Domain M migrates (P2: the
// stopped target waits for it); at B dom0 grants the new ids, Domain M resumes and
// remaps (P3 holds: the target is there already); the target is unpaused only after
// "monitoring" (P4).
func Compute(evs []Event) (Figures, error) {
	get := func(name string, want ...string) (time.Time, error) {
		e, ok := Find(evs, name, want...)
		if !ok {
			return time.Time{}, fmt.Errorf("no %s %v event in host A's log", name, want)
		}
		return e.Time, nil
	}
	var f Figures
	var err error
	ts := map[string]time.Time{}
	for _, k := range []struct {
		key, name string
		want      []string
	}{
		{"monA", "MONITORING", []string{"where=A"}},
		{"runA", "TARGET-UNPAUSE", []string{"where=A"}},
		{"tStart", "MIGRATE-TARGET-START", nil},
		{"tDone", "MIGRATE-TARGET-DONE", nil},
		{"quiesced", "QUIESCED", nil},
		{"mStart", "MIGRATE-DOMAINM-START", nil},
		{"mDone", "MIGRATE-DOMAINM-DONE", nil},
		{"monB", "MONITORING", []string{"where=B"}},
		{"runB", "TARGET-UNPAUSE", []string{"where=B"}},
		{"done", "DONE", nil},
	} {
		if ts[k.key], err = get(k.name, k.want...); err != nil {
			return f, err
		}
	}
	f.TargetMigration = ts["tDone"].Sub(ts["tStart"])
	f.DomMMigration = ts["mDone"].Sub(ts["mStart"])
	// P1: Domain M held (monitoring, not migrating) until the target stopped.
	f.P1 = ts["tDone"].Sub(ts["tStart"])
	// P2: the stopped target waits for prepare and Domain M's migration.
	f.P2 = ts["mDone"].Sub(ts["tDone"])
	// P3: Domain M arrives after the target: no wait.
	f.P3 = 0
	// P4: the target stays paused from Domain M's arrival to "monitoring".
	f.P4 = ts["monB"].Sub(ts["mDone"])
	f.Downtime = ts["runB"].Sub(ts["tDone"])
	// The invariant's timeline. The target may run from the moment an unpause is sent
	// and until its migration ended (it stops at some point before); Domain M monitors
	// from a "monitoring" answer until prepare was sent.
	f.Timeline = syncpoint.Timeline{
		{Time: ts["monA"], Subject: syncpoint.SubjectDomM, Where: "A/domainm", Up: true, What: "running"},
		{Time: ts["monA"], Subject: syncpoint.SubjectSupervisor, Where: "A", Up: true, What: "monitoring"},
		{Time: ts["runA"], Subject: syncpoint.SubjectTarget, Where: "A/target", Up: true, What: "unpause sent"},
		{Time: ts["tDone"], Subject: syncpoint.SubjectTarget, Where: "A/target", Up: false, What: "xl migrate ended"},
		{Time: ts["quiesced"].Add(-time.Nanosecond), Subject: syncpoint.SubjectSupervisor, Where: "A", Up: false, What: "prepare sent"},
		{Time: ts["mStart"], Subject: syncpoint.SubjectDomM, Where: "A/domainm", Up: false, What: "xl migrate started"},
		{Time: ts["mDone"], Subject: syncpoint.SubjectDomM, Where: "B/domainm", Up: true, What: "arrived"},
		{Time: ts["monB"], Subject: syncpoint.SubjectSupervisor, Where: "B", Up: true, What: "monitoring"},
		{Time: ts["runB"], Subject: syncpoint.SubjectTarget, Where: "B/target", Up: true, What: "unpause sent"},
		{Time: ts["done"], Subject: syncpoint.SubjectEnd, What: "end"},
	}
	f.Violations, f.Gap = f.Timeline.Check()
	return f, nil
}

// String prints the figures as the lab's timeline footer.
func (f Figures) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }
	return fmt.Sprintf("target migration %s, Domain M migration %s; P1 %s, P2 %s, P3 %s, P4 %s; target downtime %s; monitoring gap %s (%d violations)",
		ms(f.TargetMigration), ms(f.DomMMigration), ms(f.P1), ms(f.P2), ms(f.P3), ms(f.P4), ms(f.Downtime), ms(f.Gap), len(f.Violations))
}

// Range is a guest-physical range [Start, End).
type Range struct{ Start, End uint64 }

// ParseRanges parses the agent's "0xA-0xB 0xC-0xD" list.
func ParseRanges(s string) ([]Range, error) {
	var out []Range
	for _, f := range strings.Fields(s) {
		a, b, ok := strings.Cut(f, "-")
		if !ok {
			return nil, fmt.Errorf("range %q: want START-END", f)
		}
		x, err1 := strconv.ParseUint(a, 0, 64)
		y, err2 := strconv.ParseUint(b, 0, 64)
		if err1 != nil || err2 != nil || y <= x {
			return nil, fmt.Errorf("range %q: bad bounds", f)
		}
		out = append(out, Range{x, y})
	}
	return out, nil
}

var e820Line = regexp.MustCompile(`BIOS-e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (\w[\w ]*)`)

// ParseE820 reads the e820 map a Linux guest printed at boot (its console log): the
// map Xen's toolstack gave the domain. The end is made exclusive.
func ParseE820(r io.Reader) (usable, other []Range, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := e820Line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		a, _ := strconv.ParseUint(m[1], 0, 64)
		b, _ := strconv.ParseUint(m[2], 0, 64)
		rg := Range{a, b + 1}
		if strings.TrimSpace(m[3]) == "usable" {
			usable = append(usable, rg)
		} else {
			other = append(other, rg)
		}
	}
	return usable, other, sc.Err()
}

// Covered reports the bytes of want that lie inside have.
func Covered(want, have []Range) uint64 {
	var n uint64
	for _, w := range want {
		for _, h := range have {
			lo, hi := max(w.Start, h.Start), min(w.End, h.End)
			if hi > lo {
				n += hi - lo
			}
		}
	}
	return n
}

// Size is the total of rs.
func Size(rs []Range) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.End - r.Start
	}
	return n
}
