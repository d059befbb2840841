package xenlab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/domainm/domainm/image/lab"
	"github.com/domainm/domainm/migrate-hooks/internal/xenmig"
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

// Migration reads the co-migration's result (domainm-migrate migrate --xen --json on
// host A).
func (l *Lab) Migration() (*xenmig.Result, error) {
	b, err := os.ReadFile(l.Run + "/out-A/migrate.json")
	if err != nil {
		return nil, err
	}
	var r xenmig.Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("out-A/migrate.json: %w", err)
	}
	return &r, nil
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

// SuspendRequested returns when libxl asked domain domid to suspend (the xenstore watch
// log xs.log of host h: "EPOCH HOST XS /local/domain/DOMID/control/shutdown suspend").
func (l *Lab) SuspendRequested(h string, domid int) (time.Time, bool) {
	f, err := os.Open(l.Run + "/out-" + h + "/xs.log")
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	return suspendRequested(f, domid)
}

// suspendRequested finds the first write of the domain's control/shutdown node in a
// watch log: libxl's suspend request. Its value reads "suspend", or nothing when the
// guest had already acknowledged (cleared) the request when the watcher read it (lab
// run 12: the watch fired at the request and read an empty node).
func suspendRequested(r io.Reader, domid int) (time.Time, bool) {
	evs, _ := ParseEvents(r)
	node := fmt.Sprintf("/local/domain/%d/control/shutdown", domid)
	for _, e := range evs {
		if f := strings.Fields(e.Line); e.Name == "XS" && len(f) >= 4 && f[3] == node && (len(f) == 4 || f[4] == "suspend") {
			return e.Time, true
		}
	}
	return time.Time{}, false
}

// ConsoleAlert is one of Domain M's alerts (the supervisor's file sink, ECS fields) as
// its console reached dom0's xenconsoled log, "[YYYY-MM-DD HH:MM:SS] {json}".
type ConsoleAlert struct {
	lab.Alert           // the fields the QEMU lab reads of the same alerts
	Timestamp time.Time `json:"@timestamp"` // Domain M's clock
	Logged    time.Time `json:"-"`          // xenconsoled's timestamp (dom0's clock, seconds)
}

// ParseConsoleAlerts reads the alerts among the lines of a Domain M console log. A line
// that is not one whole alert (kernel or init output, one cut by other output) is skipped.
func ParseConsoleAlerts(r io.Reader) ([]ConsoleAlert, error) {
	var out []ConsoleAlert
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		i := strings.Index(line, `{"@timestamp":`)
		if i < 0 {
			continue
		}
		var a ConsoleAlert
		if json.Unmarshal([]byte(line[i:]), &a) != nil || a.Event.Action == "" {
			continue
		}
		if p := strings.TrimSpace(line[:i]); strings.HasPrefix(p, "[") && strings.HasSuffix(p, "]") {
			if t, err := time.Parse("2006-01-02 15:04:05", p[1:len(p)-1]); err == nil {
				a.Logged = t
			}
		}
		a.Raw = line[i:]
		out = append(out, a)
	}
	return out, sc.Err()
}

// With returns the alerts of action (and, unless path is "", of file path).
func With(as []ConsoleAlert, action, path string) []ConsoleAlert {
	var out []ConsoleAlert
	for _, a := range as {
		if a.Event.Action == action && (path == "" || a.File.Path == path) {
			out = append(out, a)
		}
	}
	return out
}

// ConsoleAlerts reads Domain M's alerts from host h's copy of its console log.
func (l *Lab) ConsoleAlerts(h string) ([]ConsoleAlert, error) {
	f, err := os.Open(l.Run + "/out-" + h + "/guest-domainm.log")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseConsoleAlerts(f)
}
