package ganesha

import (
	"encoding/binary"
	"testing"
)

// FuzzParseReply: a reply comes from the network; parsing never panics.
func FuzzParseReply(f *testing.F) {
	ok := []uint32{7, 1, 0, 0, 0, 0}
	mismatch := []uint32{7, 1, 0, 0, 0, 2, 4, 4}
	for _, ws := range [][]uint32{ok, mismatch, {7, 1, 0, 0, 0xffffffff}} {
		var b []byte
		for _, w := range ws {
			b = binary.BigEndian.AppendUint32(b, w)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { _ = parseReply(b, 7, 4) })
}
