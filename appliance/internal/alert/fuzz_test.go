package alert

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/domainm/domainm/detectors"
)

// FuzzSyslogFrame renders alerts whose guest-controlled parts (file path, matched
// bytes, rule metadata) are arbitrary, and checks that the frame stays well formed:
// printable header, one SD element whose values unescape to the (bounded, valid
// UTF-8) input, and the length limit.
func FuzzSyslogFrame(f *testing.F) {
	f.Add("/etc/shadow", "evil", "desc", 200)
	f.Add(`/tmp/a]b"c\d`, "x\x00\xff", `]"\`, 600)
	f.Add("/\n/\r", strings.Repeat("é", 300), "", 480)
	f.Fuzz(func(t *testing.T, path, data, desc string, maxLen int) {
		maxLen = 480 + abs(maxLen)%4000
		fd := detectors.Finding{Detector: "yara-file", Rule: "R", Path: path, Time: goldenTime,
			Meta: map[string]string{"description": desc}}
		sm := detectors.StringMatch{Name: "$a"}
		sm.SetData([]byte(data))
		fd.Matches = []detectors.StringMatch{sm}
		e := FromFinding(fd, StateNew)
		fillEvent(&e, "h")
		raw, err := marshalEvent(&e)
		if err != nil {
			t.Fatal(err)
		}
		for _, text := range []bool{false, true} {
			fr := syslogFormat{facility: 4, text: text, sdid: DefaultSDID, procid: "1", maxLen: maxLen}
			frame := string(fr.frame(&e, raw))
			if len(frame) > maxLen {
				t.Fatalf("frame of %d bytes, max %d", len(frame), maxLen)
			}
			params, rest, ok := parseSD(t, frame)
			if !ok {
				t.Fatalf("malformed frame: %q", frame)
			}
			if want := strings.ToValidUTF8(bound(path), "\uFFFD"); params["path"] != "" && params["path"] != want {
				t.Fatalf("path param %q, want %q", params["path"], want)
			}
			if params["id"] != e.Event.ID || params["severity"] != "medium" {
				t.Fatalf("id/severity params lost: %v", params)
			}
			if rest != "" && rest[0] != ' ' {
				t.Fatalf("no space before MSG: %q", rest)
			}
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -(n + 1)
	}
	return n
}

// parseSD parses "<PRI>1 TS HOST APP PROCID MSGID [domainm@32473 k="v" ...]" and
// returns the unescaped params and what follows the SD element.
func parseSD(t *testing.T, frame string) (map[string]string, string, bool) {
	fields := strings.SplitN(frame, " ", 7)
	if len(fields) != 7 || !strings.HasPrefix(fields[0], "<") {
		return nil, "", false
	}
	for _, h := range fields[1:6] {
		for i := 0; i < len(h); i++ {
			if h[i] < 33 || h[i] > 126 {
				return nil, "", false
			}
		}
	}
	s := fields[6]
	if !strings.HasPrefix(s, "["+DefaultSDID) {
		return nil, "", false
	}
	s = s[len(DefaultSDID)+1:]
	params := map[string]string{}
	for {
		if strings.HasPrefix(s, "]") {
			return params, s[1:], true
		}
		if !strings.HasPrefix(s, " ") {
			return nil, "", false
		}
		eq := strings.Index(s, `="`)
		if eq < 0 {
			return nil, "", false
		}
		name := s[1:eq]
		s = s[eq+2:]
		var v strings.Builder
		for {
			if s == "" {
				return nil, "", false
			}
			c := s[0]
			if c == '\\' && len(s) > 1 && strings.ContainsRune(`"\]`, rune(s[1])) {
				v.WriteByte(s[1])
				s = s[2:]
				continue
			}
			if c == '"' {
				s = s[1:]
				break
			}
			if c == ']' {
				return nil, "", false // an unescaped ']' inside a value
			}
			v.WriteByte(c)
			s = s[1:]
		}
		if !utf8.ValidString(v.String()) {
			return nil, "", false
		}
		params[name] = v.String()
	}
}
