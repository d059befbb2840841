package proto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Addr is a guest-physical address (the scan cursor). Its JSON form is the alert
// schema's, a "0x..." lower-case hex string, as the unscanned ranges and every --json
// output give addresses. It decodes that form and the plain integer that builds before
// it sent, so a coordinator and a supervisor of different builds understand each other
// during an upgrade; a peer that does not ask for "0x..." (Request.AddrForm) still gets
// the integer (Response.IntegerAddrs), which is all an older build can decode.
type Addr uint64

// AddrFormHex in Request.AddrForm asks for addresses as "0x..." strings.
const AddrFormHex = "0x"

// MarshalJSON gives "0x..." (0 is "0x0").
func (a Addr) MarshalJSON() ([]byte, error) {
	return []byte(`"0x` + strconv.FormatUint(uint64(a), 16) + `"`), nil
}

// UnmarshalJSON reads "0x..." (either case of hex digits) or a non-negative integer.
func (a *Addr) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		h, ok := strings.CutPrefix(s, "0x")
		if !ok || h == "" {
			return fmt.Errorf("address %q: want \"0x\" and hex digits", s)
		}
		v, err := strconv.ParseUint(h, 16, 64)
		if err != nil {
			return fmt.Errorf("address %q: %w", s, err)
		}
		*a = Addr(v)
		return nil
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("address %s: want \"0x...\" or an integer", b)
	}
	*a = Addr(v)
	return nil
}
