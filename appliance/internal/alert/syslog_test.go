package alert

import (
	"strings"
	"testing"
	"time"
)

func TestSyslogFrameByHand(t *testing.T) {
	e := Health(time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.UTC), SevHigh, "alert-spool", "full", `spool "x" full`)
	e.DomainM.Sink = `a]b\c"d`
	fillEvent(&e, "dm 1") // the space must not reach HOSTNAME
	f := syslogFormat{facility: 4, text: true, sdid: DefaultSDID, procid: "42", maxLen: 8192}
	got := string(f.frame(&e, nil))
	want := `<35>1 2026-01-02T03:04:05.678901Z dm_1 domainm 42 alert-spool-full [domainm@32473 id="` + e.Event.ID +
		`" fid="` + e.DomainM.FindingID + `" kind="event" severity="high" detector="appliance" sink="a\]b\\c\"d"] spool "x" full`
	if got != want {
		t.Fatalf("frame\n got %s\nwant %s", got, want)
	}
	if framed := string(octetCount(nil, []byte("<1>1 - - - - - -"))); framed != "16 <1>1 - - - - - -" {
		t.Fatalf("octet counting: %q", framed)
	}
}

func TestSyslogFrameTooLong(t *testing.T) {
	e := testEvent(1)
	fillEvent(&e, "h")
	raw := []byte(`{"long":"` + strings.Repeat("x", 5000) + `"}`)
	f := syslogFormat{facility: 4, sdid: DefaultSDID, procid: "1", maxLen: 1000}
	got := f.frame(&e, raw)
	if !strings.HasSuffix(string(got), "] "+e.Message) {
		t.Fatalf("a JSON MSG over max_frame_len should fall back to the text message: %s", got)
	}
	e.Message = strings.Repeat("é", 1000)
	got = f.frame(&e, raw)
	if len(got) > 1000 || !strings.HasSuffix(string(got), "é") {
		t.Fatalf("cut frame: len %d, ends %q", len(got), got[len(got)-4:])
	}
}

func TestHeaderFieldAndSDEscape(t *testing.T) {
	for _, c := range []struct{ in, want string }{{"", "-"}, {"a b\tc", "a_b_c"}, {"é", "__"}} {
		if got := headerField(c.in, 32); got != c.want {
			t.Errorf("headerField(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := headerField(strings.Repeat("m", 40), 32); len(got) != 32 {
		t.Errorf("MSGID not cut to 32: %d", len(got))
	}
	if got := sdEscape("x\xffy]"); got != `x`+"\uFFFD"+`y\]` {
		t.Errorf("sdEscape = %q", got)
	}
}

func TestCutUTF8(t *testing.T) {
	s := []byte("aé€𝄞")
	for n := 0; n <= len(s); n++ {
		got := cutUTF8(s, n)
		if len(got) > n || !strings.HasPrefix(string(s), string(got)) || !utf8Valid(got) {
			t.Errorf("cutUTF8(%d) = %q", n, got)
		}
	}
}

func utf8Valid(b []byte) bool { return strings.ToValidUTF8(string(b), "!") == string(b) }
