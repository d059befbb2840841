package linux

import "fmt"

// x86-64 interrupt gates are 16 bytes (Intel SDM vol. 3, 6.14.1): offset 15..0,
// segment selector, IST/type/DPL/P, offset 31..16, offset 63..32, reserved.
const (
	idtEntries  = 256
	idtGateSize = 16
)

// Gate is one IDT entry.
type Gate struct {
	Vector  int
	Target  uint64
	Present bool
	Type    int // 14 interrupt gate, 15 trap gate
	DPL     int
	IST     int
}

// parseIDT decodes the gates of an IDT (raw holds whole 16-byte gates).
func parseIDT(raw []byte) []Gate {
	n := min(len(raw)/idtGateSize, idtEntries)
	out := make([]Gate, n)
	for i := range out {
		g := raw[i*idtGateSize:]
		bits := le.Uint16(g[4:])
		out[i] = Gate{
			Vector:  i,
			Target:  uint64(le.Uint16(g[0:])) | uint64(le.Uint16(g[6:]))<<16 | uint64(le.Uint32(g[8:]))<<32,
			IST:     int(bits & 7),
			Type:    int(bits>>8) & 0x1f,
			DPL:     int(bits>>13) & 3,
			Present: bits&(1<<15) != 0,
		}
	}
	return out
}

// IDT reads the kernel's interrupt descriptor table (idt_table, which every CPU's
// IDTR points at through its read-only alias) and returns its 256 gates.
func (in *Inspector) IDT() ([]Gate, error) {
	va, err := in.K.Syms.Addr("idt_table")
	if err != nil {
		return nil, err
	}
	raw := make([]byte, idtEntries*idtGateSize)
	if err := in.K.Read(va, raw); err != nil {
		return nil, fmt.Errorf("reading idt_table at %#x: %w", va, err)
	}
	return parseIDT(raw), nil
}
