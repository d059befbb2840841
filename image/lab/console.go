package lab

import (
	"bufio"
	"encoding/json"
	"strings"

	"github.com/domainm/domainm/appliance/control/proto"
)

// Console is what the Domain M stand-in printed: its status answers and alerts, in order.
type Console struct {
	Statuses []proto.Response
	Alerts   []Alert
	Logs     []string
}

// Alert is one alert as the file sink wrote it (ECS fields), plus its raw line.
type Alert struct {
	Event struct {
		Action string `json:"action"`
	} `json:"event"`
	File struct {
		Path string `json:"path"`
		Mode string `json:"mode"`
	} `json:"file"`
	Host struct { // the target
		Name string `json:"name"`
		ID   string `json:"id"` // its UUID
	} `json:"host"`
	Rule struct {
		Name string `json:"name"`
	} `json:"rule"`
	Message string `json:"message"`
	Raw     string `json:"-"`
}

// ParseConsole reads the GUEST-STATUS, GUEST-ALERT and GUEST-LOG lines of a serial log;
// a line cut by kernel output is skipped.
func ParseConsole(serial string) Console {
	var c Console
	sc := bufio.NewScanner(strings.NewReader(serial))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if rest, ok := cut(line, "GUEST-STATUS "); ok {
			var r proto.Response
			if json.Unmarshal([]byte(rest), &r) == nil {
				c.Statuses = append(c.Statuses, r)
			}
		} else if rest, ok := cut(line, "GUEST-ALERT "); ok {
			var a Alert
			if json.Unmarshal([]byte(rest), &a) == nil {
				a.Raw = rest
				c.Alerts = append(c.Alerts, a)
			}
		} else if rest, ok := cut(line, "GUEST-LOG "); ok {
			c.Logs = append(c.Logs, rest)
		}
	}
	return c
}

func cut(line, prefix string) (string, bool) {
	i := strings.Index(line, prefix)
	if i < 0 {
		return "", false
	}
	return line[i+len(prefix):], true
}

// Last is the last status, or a zero Response.
func (c Console) Last() proto.Response {
	if len(c.Statuses) == 0 {
		return proto.Response{}
	}
	return c.Statuses[len(c.Statuses)-1]
}

// HasProblem says whether a status names the problem code.
func HasProblem(r proto.Response, code string) bool {
	if r.Health == nil {
		return false
	}
	for _, p := range r.Health.Problems {
		if p.Code == code {
			return true
		}
	}
	return false
}

// With returns the alerts with the action (and file path, if not "").
func (c Console) With(action, path string) []Alert {
	var out []Alert
	for _, a := range c.Alerts {
		if a.Event.Action == action && (path == "" || a.File.Path == path) {
			out = append(out, a)
		}
	}
	return out
}
