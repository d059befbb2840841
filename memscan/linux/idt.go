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

// cpuEntryAreaIDT is where x86-64 kernels (4.15 on) map idt_table read-only for the
// CPUs to load (CPU_ENTRY_AREA_RO_IDT, the start of the cpu_entry_area; idt_map_in_cea).
const cpuEntryAreaIDT = 0xfffffe0000000000

// IDTAlias returns the physical pages of idt_table and of the read-only alias the CPUs
// load (cpuEntryAreaIDT), which must be the same; ok is false when the alias is not
// mapped (a kernel without it).
func (in *Inspector) IDTAlias() (table, alias uint64, ok bool, err error) {
	va, err := in.K.Syms.Addr("idt_table")
	if err != nil {
		return 0, 0, false, err
	}
	m, err := in.K.Translate(va)
	if err != nil {
		return 0, 0, false, fmt.Errorf("idt_table at %#x: %w", va, err)
	}
	a, err := in.K.Translate(cpuEntryAreaIDT)
	if err != nil {
		return m.PA, 0, false, nil
	}
	return m.PA, a.PA, true, nil
}

// aliasIDT reads the gates through the alias the CPUs load.
func (in *Inspector) aliasIDT() ([]Gate, error) {
	raw := make([]byte, idtEntries*idtGateSize)
	if err := in.K.Read(cpuEntryAreaIDT, raw); err != nil {
		return nil, fmt.Errorf("reading the IDT alias at %#x: %w", uint64(cpuEntryAreaIDT), err)
	}
	return parseIDT(raw), nil
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
