package elfcore

import (
	"bytes"
	"encoding/binary"
)

// buildCore writes a little-endian ELF core of the given class (32 or 64) with one
// PT_NOTE and a PT_LOAD per entry of loads, whose bytes follow the headers.
func buildCore(class int, loads map[uint64][]byte, order []uint64) []byte {
	le := binary.LittleEndian
	ehsize, phsize := 64, 56
	if class == 32 {
		ehsize, phsize = 52, 32
	}
	nph := 1 + len(order)
	dataOff := uint64(ehsize + nph*phsize)
	note := []byte("CORE\x00\x00\x00\x00")
	hdr := make([]byte, ehsize)
	copy(hdr, "\x7fELF")
	hdr[4], hdr[5], hdr[6] = byte(class/32), 1, 1
	le.PutUint16(hdr[16:], etCore)
	le.PutUint16(hdr[18:], 62)
	if class == 64 {
		le.PutUint64(hdr[32:], uint64(ehsize))
		le.PutUint16(hdr[52:], uint16(ehsize))
		le.PutUint16(hdr[54:], uint16(phsize))
		le.PutUint16(hdr[56:], uint16(nph))
	} else {
		le.PutUint32(hdr[28:], uint32(ehsize))
		le.PutUint16(hdr[40:], uint16(ehsize))
		le.PutUint16(hdr[42:], uint16(phsize))
		le.PutUint16(hdr[44:], uint16(nph))
	}
	var ph, data bytes.Buffer
	put := func(typ uint32, off, paddr, size uint64) {
		b := make([]byte, phsize)
		if class == 64 {
			le.PutUint32(b[0:], typ)
			le.PutUint64(b[8:], off)
			le.PutUint64(b[24:], paddr)
			le.PutUint64(b[32:], size)
			le.PutUint64(b[40:], size)
		} else {
			le.PutUint32(b[0:], typ)
			le.PutUint32(b[4:], uint32(off))
			le.PutUint32(b[12:], uint32(paddr))
			le.PutUint32(b[16:], uint32(size))
			le.PutUint32(b[20:], uint32(size))
		}
		ph.Write(b)
	}
	put(PT_NOTE, dataOff, 0, uint64(len(note)))
	data.Write(note)
	for _, pa := range order {
		put(PT_LOAD, dataOff+uint64(data.Len()), pa, uint64(len(loads[pa])))
		data.Write(loads[pa])
	}
	return append(append(hdr, ph.Bytes()...), data.Bytes()...)
}

// seedCores returns small valid cores used as test and fuzz seeds.
func seedCores() [][]byte {
	loads := map[uint64][]byte{0: []byte("low memory page"), 0x100000: []byte("DOMAINM-MARK high")}
	order := []uint64{0, 0x100000}
	return [][]byte{buildCore(64, loads, order), buildCore(32, loads, order)}
}
