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
