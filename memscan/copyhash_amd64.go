//go:build amd64 && !purego

package memscan

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

var copyAccumOK = cpu.X86.HasAVX2

// copyAccumAVX2 (copyhash_amd64.s) accumulates XXH3's stripes of src, scrambling
// after each 1 KiB block, up to the last 1-64 bytes, storing each 32 bytes it loads to
// dst at the same offset.
//
//go:noescape
func copyAccumAVX2(acc *[8]uint64, dst, src, key unsafe.Pointer, len uint64)

// copyAccum copies and accumulates len(src) > 64 bytes but the last 1-64.
func copyAccum(accs *[8]uint64, dst, src []byte, secret *hashSecret) {
	_ = dst[len(src)-1]
	copyAccumAVX2(accs, unsafe.Pointer(&dst[0]), unsafe.Pointer(&src[0]), unsafe.Pointer(&secret[0]), uint64(len(src)))
}
