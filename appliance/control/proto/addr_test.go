package proto

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestAddrForms: an address encodes as the alert schema's "0x..." lower-case hex and
// decodes from that and from the integer older builds sent; anything else is an error.
func TestAddrForms(t *testing.T) {
	for v, want := range map[Addr]string{0: `"0x0"`, 0x1000: `"0x1000"`, 0xffffffffffffffff: `"0xffffffffffffffff"`, 0xABCDEF: `"0xabcdef"`} {
		if b, err := json.Marshal(v); err != nil || string(b) != want {
			t.Errorf("%d: %s %v, want %s", uint64(v), b, err, want)
		}
	}
	for in, want := range map[string]Addr{`"0x1000"`: 0x1000, `4096`: 0x1000, `"0xABCdef"`: 0xabcdef, `0`: 0, `"0x0"`: 0,
		`18446744073709551615`: 0xffffffffffffffff, `"0xffffffffffffffff"`: 0xffffffffffffffff} {
		var a Addr
		if err := json.Unmarshal([]byte(in), &a); err != nil || a != want {
			t.Errorf("%s: %#x %v, want %#x", in, uint64(a), err, uint64(want))
		}
	}
	for _, in := range []string{`"1000"`, `"0x"`, `"0xg"`, `-1`, `1.5`, `1e3`, `"0x10000000000000000"`, `18446744073709551616`, `true`, `{}`} {
		var a Addr
		if err := json.Unmarshal([]byte(in), &a); err == nil {
			t.Errorf("%s: decoded as %#x, want an error", in, uint64(a))
		}
	}
}

// TestResponseCursorForPeers: a response's cursor is "0x..." for a peer that asked
// (addr_form), an integer otherwise, which is all a build before the string form
// decodes (its Response had Cursor *uint64: that type fails on the string, which is why
// the form is asked for); the current Response decodes both. The rest of the response
// is the same in both forms.
func TestResponseCursorForPeers(t *testing.T) {
	c := Addr(0x3ff000)
	r := Response{ID: json.RawMessage("1"), OK: true, State: StateQuiesced, Cursor: &c, Passes: 2, Epoch: 5}
	hex, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(hex), `"cursor":"0x3ff000"`) {
		t.Fatalf("current peer: %s %v", hex, err)
	}
	r.IntegerAddrs = true
	old, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(old), `"cursor":4190208`) || strings.Contains(string(old), "0x") {
		t.Fatalf("older peer: %s %v", old, err)
	}
	type oldResponse struct { // the part of an older build's Response that matters
		OK     bool    `json:"ok"`
		State  string  `json:"state"`
		Cursor *uint64 `json:"cursor,omitempty"`
		Passes int     `json:"passes,omitempty"`
		Epoch  uint64  `json:"epoch,omitempty"`
	}
	var o oldResponse
	if err := json.Unmarshal(old, &o); err != nil || o.Cursor == nil || *o.Cursor != 0x3ff000 || o.State != StateQuiesced || o.Passes != 2 || o.Epoch != 5 {
		t.Errorf("older build decoding %s: %+v %v", old, o, err)
	}
	if err := json.Unmarshal(hex, &o); err == nil {
		t.Errorf("an older build decodes %s: then the form need not be asked for", hex)
	}
	for _, b := range [][]byte{hex, old} {
		var n Response
		if err := json.Unmarshal(b, &n); err != nil || n.Cursor == nil || *n.Cursor != c || n.State != StateQuiesced || n.Passes != 2 || n.Epoch != 5 {
			t.Errorf("current build decoding %s: %+v %v", b, n, err)
		}
	}
	// No cursor: the same bytes either way.
	r.Cursor = nil
	a, _ := json.Marshal(r)
	r.IntegerAddrs = false
	if b, _ := json.Marshal(r); string(a) != string(b) || strings.Contains(string(a), "cursor") {
		t.Errorf("no cursor: %s and %s", a, b)
	}
}

// TestTargetHostForPeers: a response's target names its hypervisor host
// "hypervisor_host" (the alert schema's domainm.target name) for a peer that asked
// (host_form), "host" otherwise, which is all a build before the rename reads; the
// current TargetInfo reads both. Resume's arguments carry both names, since a client
// cannot know its supervisor's build: an older supervisor reads "host", a current one
// either. The forms combine with the cursor's.
func TestTargetHostForPeers(t *testing.T) {
	c := Addr(0x1000)
	r := Response{ID: json.RawMessage("1"), OK: true, State: StateMonitoring, Target: &TargetInfo{Name: "web-1", UUID: "u", Host: "dst", DomID: 7}, Cursor: &c}
	type oldTarget struct { // an older build's TargetInfo
		Name  string `json:"name,omitempty"`
		UUID  string `json:"uuid,omitempty"`
		Host  string `json:"host,omitempty"`
		DomID int    `json:"domid,omitempty"`
	}
	for _, tc := range []struct {
		legacy, intCursor bool
		want, not         string
	}{
		{false, false, `"target":{"name":"web-1","uuid":"u","hypervisor_host":"dst","domid":7}`, `"host"`},
		{true, false, `"target":{"name":"web-1","uuid":"u","host":"dst","domid":7}`, `hypervisor_host`},
		{true, true, `"target":{"name":"web-1","uuid":"u","host":"dst","domid":7}`, `hypervisor_host`},
		{false, true, `"hypervisor_host":"dst"`, `"host"`},
	} {
		r.LegacyHost, r.IntegerAddrs = tc.legacy, tc.intCursor
		b, err := json.Marshal(r)
		if err != nil || !strings.Contains(string(b), tc.want) || strings.Contains(string(b), tc.not) {
			t.Errorf("legacy %v, integer cursor %v: %s %v; want %s and no %s", tc.legacy, tc.intCursor, b, err, tc.want, tc.not)
		}
		if cursor := `"cursor":4096`; tc.intCursor != strings.Contains(string(b), cursor) {
			t.Errorf("integer cursor %v: %s", tc.intCursor, b)
		}
		var old struct {
			Target oldTarget `json:"target"`
		}
		if err := json.Unmarshal(b, &old); err != nil || (old.Target.Host == "dst") != tc.legacy {
			t.Errorf("older build decoding %s: %+v %v", b, old, err)
		}
		var n Response
		if err := json.Unmarshal(b, &n); err != nil || n.Target == nil || *n.Target != *r.Target || n.Cursor == nil || *n.Cursor != c {
			t.Errorf("current build decoding %s: %+v %v", b, n, err)
		}
	}

	a := ResumeArgs{Source: "xen:7", Target: TargetInfo{Name: "web-1", Host: "dst", DomID: 7}}
	b, err := json.Marshal(a)
	if err != nil || !strings.Contains(string(b), `"hypervisor_host":"dst"`) || !strings.Contains(string(b), `"host":"dst"`) {
		t.Fatalf("resume args: %s %v, want the host under both names", b, err)
	}
	var old struct {
		Target oldTarget `json:"target"`
	}
	if err := json.Unmarshal(b, &old); err != nil || old.Target.Host != "dst" || old.Target.DomID != 7 {
		t.Errorf("older supervisor decoding %s: %+v %v", b, old, err)
	}
	var n ResumeArgs
	if err := json.Unmarshal(b, &n); err != nil || n != a {
		t.Errorf("current supervisor decoding %s: %+v %v", b, n, err)
	}
	if req := NewRequest(json.RawMessage("1"), CmdStatus); req.AddrForm != AddrFormHex || req.HostForm != HostFormHypervisor {
		t.Errorf("NewRequest asks for %q and %q", req.AddrForm, req.HostForm)
	}
}

// TestSinkTestEventID: alert-test's per-sink result names the test event's id as the
// alert schema does, "event":{"id":...}, not "event_id"; a reply of an older daemon
// (still running after the package was upgraded) is read too.
func TestSinkTestEventID(t *testing.T) {
	s := SinkTest{Sink: "siem", Type: "syslog", Delivered: true, Seconds: 0.02, EventID: "abc123"}
	b, err := json.Marshal(s)
	if err != nil || !strings.Contains(string(b), `"event":{"id":"abc123"}`) || strings.Contains(string(b), "event_id") {
		t.Fatalf("%s %v", b, err)
	}
	for _, in := range []string{string(b), `{"sink":"siem","type":"syslog","delivered":true,"seconds":0.02,"event_id":"abc123"}`} {
		var n SinkTest
		if err := json.Unmarshal([]byte(in), &n); err != nil || n != s {
			t.Errorf("%s: %+v %v, want %+v", in, n, err, s)
		}
	}
	if b, _ := json.Marshal(SinkTest{Sink: "x"}); strings.Contains(string(b), "event") {
		t.Errorf("no event id: %s", b)
	}
}
