package linux

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// maxBTF bounds the kernel's .BTF section (Debian 6.1's is about 5 MiB).
const maxBTF = 64 << 20

// BTF header (include/uapi/linux/btf.h).
const (
	btfMagic     = 0xeb9f
	btfHeaderLen = 24
)

// checkBTFHeader validates a raw BTF blob's header against its length: magic 0xeB9F
// (little-endian), version 1, and type and string sections inside the blob.
func checkBTFHeader(b []byte) error {
	if len(b) < btfHeaderLen {
		return fmt.Errorf("BTF blob of %d bytes is shorter than its header", len(b))
	}
	if m := binary.LittleEndian.Uint16(b); m != btfMagic {
		return fmt.Errorf("BTF magic %#04x, want %#04x", m, btfMagic)
	}
	if b[2] != 1 {
		return fmt.Errorf("BTF version %d, want 1", b[2])
	}
	hdr := uint64(binary.LittleEndian.Uint32(b[4:]))
	if hdr < btfHeaderLen || hdr > uint64(len(b)) {
		return fmt.Errorf("BTF header length %d outside the %d-byte blob", hdr, len(b))
	}
	for _, s := range []struct {
		name string
		at   int
	}{{"type", 8}, {"string", 16}} {
		off, n := uint64(binary.LittleEndian.Uint32(b[s.at:])), uint64(binary.LittleEndian.Uint32(b[s.at+4:]))
		if hdr+off+n > uint64(len(b)) {
			return fmt.Errorf("BTF %s section %#x+%#x past the %d-byte blob", s.name, off, n, len(b))
		}
	}
	return nil
}

// LoadBTF reads the kernel's own BTF (the .BTF section between __start_BTF and
// __stop_BTF) from guest memory and parses it.
func (k *Kernel) LoadBTF() (*Types, error) {
	start, err := k.Syms.Addr("__start_BTF")
	if err != nil {
		return nil, fmt.Errorf("%w (kernel built without CONFIG_DEBUG_INFO_BTF?)", err)
	}
	stop, err := k.Syms.Addr("__stop_BTF")
	if err != nil {
		return nil, err
	}
	if stop <= start || stop-start > maxBTF {
		return nil, fmt.Errorf("BTF section %#x..%#x: bad size (limit %d MiB)", start, stop, maxBTF>>20)
	}
	raw := make([]byte, stop-start)
	if err := k.Read(start, raw); err != nil {
		return nil, fmt.Errorf("reading BTF at %#x: %w", start, err)
	}
	return parseBTF(raw, start)
}

// parseBTF validates and parses a BTF blob found at va (for errors).
func parseBTF(raw []byte, va uint64) (*Types, error) {
	if err := checkBTFHeader(raw); err != nil {
		return nil, fmt.Errorf("BTF at %#x: %w", va, err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing BTF at %#x: %w", va, err)
	}
	return &Types{spec: spec, Size: len(raw)}, nil
}

// Types are the kernel's types from its BTF.
type Types struct {
	spec *btf.Spec
	Size int // bytes of BTF
}

// Struct returns the struct called name.
func (t *Types) Struct(name string) (*btf.Struct, error) {
	var s *btf.Struct
	if err := t.spec.TypeByName(name, &s); err != nil {
		return nil, fmt.Errorf("struct %s not in the kernel's BTF: %w", name, err)
	}
	return s, nil
}

// Field is a member located in a struct: its byte offset and type.
type Field struct {
	Offset uint64
	Size   uint64
	Type   btf.Type
}

// Field finds a dotted member path ("core_layout.base") in struct name, looking inside
// anonymous structs and unions, and returns its byte offset and size.
func (t *Types) Field(name, path string) (Field, error) {
	s, err := t.Struct(name)
	if err != nil {
		return Field{}, err
	}
	var typ btf.Type = s
	var off uint64
	for _, part := range strings.Split(path, ".") {
		m, moff, ok := findMember(typ, part, 0)
		if !ok {
			return Field{}, fmt.Errorf("%s has no member %s (in %s)", name, part, path)
		}
		if m.BitfieldSize != 0 {
			return Field{}, fmt.Errorf("%s.%s is a bit field", name, path)
		}
		off += moff
		typ = m.Type
	}
	size, err := btf.Sizeof(typ)
	if err != nil {
		return Field{}, fmt.Errorf("size of %s.%s: %w", name, path, err)
	}
	return Field{Offset: off, Size: uint64(size), Type: typ}, nil
}

// findMember looks for member name in a struct or union type, descending into
// anonymous members; depth bounds the recursion.
func findMember(typ btf.Type, name string, depth int) (btf.Member, uint64, bool) {
	if depth > 8 {
		return btf.Member{}, 0, false
	}
	var members []btf.Member
	switch u := btf.UnderlyingType(typ).(type) {
	case *btf.Struct:
		members = u.Members
	case *btf.Union:
		members = u.Members
	default:
		return btf.Member{}, 0, false
	}
	for _, m := range members {
		if m.Name == name {
			return m, uint64(m.Offset.Bytes()), true
		}
	}
	for _, m := range members {
		if m.Name == "" {
			if f, off, ok := findMember(m.Type, name, depth+1); ok {
				return f, uint64(m.Offset.Bytes()) + off, true
			}
		}
	}
	return btf.Member{}, 0, false
}

// Sizeof returns the size of struct name.
func (t *Types) Sizeof(name string) (uint64, error) {
	s, err := t.Struct(name)
	if err != nil {
		return 0, err
	}
	return uint64(s.Size), nil
}
