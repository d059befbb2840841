package virt

import (
	"encoding/binary"
	"testing"
)

// xdrEvent encodes a qemu_domain_monitor_event_msg.
func xdrEvent(name, event string, sec uint64, usec uint32, details *string) []byte {
	var b []byte
	u32 := func(v uint32) { b = binary.BigEndian.AppendUint32(b, v) }
	str := func(s string) {
		u32(uint32(len(s)))
		b = append(b, s...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	u32(7)
	str(name)
	b = append(b, make([]byte, 16)...)
	u32(3)
	str(event)
	u32(uint32(sec >> 32))
	u32(uint32(sec))
	u32(usec)
	if details == nil {
		u32(0)
	} else {
		u32(1)
		str(*details)
	}
	return b
}

func TestDecodeMonitorEvent(t *testing.T) {
	d := `{"status":"pre-switchover"}`
	for _, c := range []struct {
		in               []byte
		event, status    string
		usec             int
		wantErr, details bool
	}{
		{in: xdrEvent("target", "STOP", 1764490000, 123456, nil), event: "STOP", usec: 123456},
		{in: xdrEvent("target", "MIGRATION", 1764490000, 5, &d), event: "MIGRATION", status: "pre-switchover", usec: 5, details: true},
		{in: xdrEvent("target", "STOP", 1764490000, 1e6, nil), wantErr: true},
		{in: xdrEvent("target", "STOP", 1764490000, 1, nil)[:30], wantErr: true},
	} {
		e, err := decodeMonitorEvent(c.in)
		if (err != nil) != c.wantErr {
			t.Fatalf("%q: err %v, want error %v", c.in, err, c.wantErr)
		}
		if err != nil {
			continue
		}
		if e.Domain != "target" || e.Event != c.event || e.Status() != c.status || e.Time.Nanosecond() != c.usec*1000 || (e.Details != "") != c.details {
			t.Errorf("decoded %+v (status %q)", e, e.Status())
		}
	}
}

// The events come from libvirtd, not from a guest, but a broken or hostile daemon must
// not crash the coordinator: bounded strings, no panics.
func FuzzDecodeMonitorEvent(f *testing.F) {
	d := `{"status":"completed"}`
	f.Add(xdrEvent("target", "STOP", 1764490000, 1, nil))
	f.Add(xdrEvent("domm", "MIGRATION", 1764490000, 999999, &d))
	f.Add([]byte{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeMonitorEvent(b)
		if err == nil && (len(e.Domain) > len(b) || len(e.Event) > len(b) || len(e.Details) > len(b)) {
			t.Fatalf("decoded more than the input: %+v", e)
		}
		_ = e.Status()
	})
}
