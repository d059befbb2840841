package alert

import (
	"encoding/json"
	"strconv"
	"strings"

	"unicode/utf8"
)

// syslogFormat renders RFC 5424 messages:
//
//	<PRI>1 TIMESTAMP HOSTNAME domainm PROCID MSGID [SD-ID param="value" ...] MSG
//
// PRI is facility*8 + severity; TIMESTAMP is the event's @timestamp in UTC with
// microseconds (the most RFC 5424 allows); HOSTNAME is observer.hostname; PROCID the
// supervisor's pid; MSGID is event.action (memory-match, file-changed, rule-error,
// ...). MSG is the ECS event as JSON (message = "json") or event.message ("text"),
// without a BOM. A message longer than max_frame_len falls back to the text MSG, and
// then is cut at a character boundary; a header that alone is too long keeps only
// the id, fid, kind and severity params.
type syslogFormat struct {
	facility int
	text     bool
	sdid     string
	procid   string
	maxLen   int
}

const syslogTime = "2006-01-02T15:04:05.000000Z07:00"

func (f syslogFormat) frame(e *Event, raw []byte) []byte {
	head := f.header(e, sdParams(e))
	if len(head) >= f.maxLen {
		// Long guest-controlled values (paths): keep only the ids in the SD element;
		// MSG still has them.
		head = f.header(e, sdParams(e)[:4])
	}
	msg := raw
	if f.text {
		msg = []byte(e.Message)
	}
	if len(head)+1+len(msg) > f.maxLen && !f.text {
		msg = []byte(e.Message)
	}
	if room := f.maxLen - len(head) - 1; len(msg) > room {
		msg = cutUTF8(msg, max(room, 0))
	}
	out := make([]byte, 0, len(head)+1+len(msg))
	out = append(out, head...)
	if len(msg) > 0 {
		out = append(out, ' ')
		out = append(out, msg...)
	}
	return out
}

func (f syslogFormat) header(e *Event, params [][2]string) []byte {
	var b strings.Builder
	b.WriteByte('<')
	b.WriteString(strconv.Itoa(f.facility*8 + int(e.Severity()&7)))
	b.WriteString(">1 ")
	b.WriteString(e.Timestamp.UTC().Format(syslogTime))
	b.WriteByte(' ')
	b.WriteString(headerField(e.Observer.Hostname, 255))
	b.WriteString(" domainm ")
	b.WriteString(headerField(f.procid, 128))
	b.WriteByte(' ')
	b.WriteString(headerField(e.Event.Action, 32))
	b.WriteByte(' ')
	b.WriteByte('[')
	b.WriteString(f.sdid)
	for _, p := range params {
		if p[1] == "" {
			continue
		}
		b.WriteByte(' ')
		b.WriteString(p[0])
		b.WriteString(`="`)
		b.WriteString(sdEscape(p[1]))
		b.WriteByte('"')
	}
	b.WriteByte(']')
	return []byte(b.String())
}

// sdParams are the structured-data parameters: the fields a receiver filters on
// without parsing MSG.
func sdParams(e *Event) [][2]string {
	p := [][2]string{
		{"id", e.Event.ID},
		{"fid", e.DomainM.FindingID},
		{"kind", e.Event.Kind},
		{"severity", e.Severity().String()},
		{"detector", e.DomainM.Detector},
		{"state", e.DomainM.State},
	}
	if e.Rule != nil {
		p = append(p, [2]string{"rule", e.Rule.Name}, [2]string{"ruleset", e.Rule.Ruleset})
	}
	if t := e.DomainM.Target; t != nil {
		p = append(p, [2]string{"target", t.Name}, [2]string{"uuid", t.UUID})
	}
	if len(e.DomainM.Matches) > 0 {
		p = append(p, [2]string{"address", e.DomainM.Matches[0].Address})
	}
	if e.File != nil {
		p = append(p, [2]string{"path", e.File.Path})
		if e.File.Hash != nil {
			p = append(p, [2]string{"sha256", e.File.Hash.SHA256})
		}
	}
	if e.DomainM.Sink != "" {
		p = append(p, [2]string{"sink", e.DomainM.Sink})
	}
	return p
}

// sdEscape escapes what RFC 5424 section 6.3.3 requires in PARAM-VALUE: '"', '\'
// and ']'. Invalid UTF-8 becomes U+FFFD, since PARAM-VALUE is UTF-8.
func sdEscape(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if !strings.ContainsAny(s, "\"\\]") {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == '"' || r == '\\' || r == ']' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// headerField makes a header field PRINTUSASCII (33-126) of at most n octets, or the
// NILVALUE "-" when empty.
func headerField(s string, n int) string {
	if s == "" {
		return "-"
	}
	b := []byte(s)
	if len(b) > n {
		b = b[:n]
	}
	for i, c := range b {
		if c < 33 || c > 126 {
			b[i] = '_'
		}
	}
	return string(b)
}

func cutUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	b = b[:n]
	i := len(b) - 1
	for i > 0 && len(b)-i < utf8.UTFMax && b[i]&0xc0 == 0x80 {
		i-- // back to the start of the last rune
	}
	if i >= 0 && !utf8.FullRune(b[i:]) {
		b = b[:i]
	}
	return b
}

// octetCount frames a message for TCP and TLS (RFC 6587 section 3.4.1, RFC 5425
// section 4.3): "MSG-LEN SP SYSLOG-MSG".
func octetCount(dst, msg []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, ' ')
	return append(dst, msg...)
}

// decodeEvent reads a spooled event.
func decodeEvent(raw []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, err
	}
	return &e, nil
}
