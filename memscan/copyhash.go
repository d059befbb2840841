package memscan

import (
	"encoding/binary"
	"math/bits"

	"github.com/zeebo/xxh3"
)

// The change hash is XXH3-64 with the driver's secret seed (xxh3.HashSeed). A window
// that is copied is hashed as it is copied (copyHash): one pass over its bytes, the
// hash's loads being the copy's, where a copy and then a hash of the copy read it
// twice (the copy and the hash were each about 1% of the rule engine's instructions
// with 5 literal rules). The hash is that of the bytes written to dst, whatever the
// source does meanwhile (a running guest): each byte is loaded once, stored and
// hashed from the same register, and the last stripe is hashed from dst.

// xxh3Key is XXH3's default secret (kSecret), which a seed turns into the secret the
// long-input hash uses.
var xxh3Key = [192]byte{
	0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
	0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
	0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
	0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
	0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
	0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
	0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
	0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
	0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
	0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
	0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
	0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
}

const (
	xxPrime32_1 = 2654435761
	xxPrime32_2 = 2246822519
	xxPrime32_3 = 3266489917
	xxPrime64_1 = 11400714785074694791
	xxPrime64_2 = 14029467366897019727
	xxPrime64_3 = 1609587929392839161
	xxPrime64_4 = 9650029242287828579
	xxPrime64_5 = 2870177450012600261
	// copyHashMin: shorter windows are copied and then hashed (xxh3.HashSeed), as
	// XXH3 hashes inputs up to 240 bytes another way.
	copyHashMin = 241
)

// hashSecret is XXH3's secret for a seed (XXH3_initCustomSecret).
type hashSecret [192]byte

func newHashSecret(seed uint64) *hashSecret {
	var s hashSecret
	for i := 0; i < len(s); i += 16 {
		binary.LittleEndian.PutUint64(s[i:], binary.LittleEndian.Uint64(xxh3Key[i:])+seed)
		binary.LittleEndian.PutUint64(s[i+8:], binary.LittleEndian.Uint64(xxh3Key[i+8:])-seed)
	}
	return &s
}

// copyHash copies src into dst (len(dst) >= len(src)) and returns
// xxh3.HashSeed(dst[:len(src)], seed), secret being newHashSecret(seed).
func copyHash(dst, src []byte, seed uint64, secret *hashSecret) uint64 {
	n := len(src)
	dst = dst[:n]
	if n < copyHashMin || !copyAccumOK {
		copy(dst, src)
		return xxh3.HashSeed(dst, seed)
	}
	accs := [8]uint64{xxPrime32_3, xxPrime64_1, xxPrime64_2, xxPrime64_3, xxPrime64_4, xxPrime32_2, xxPrime64_5, xxPrime32_1}
	copyAccum(&accs, dst, src, secret)
	// The stripes up to the last 1-64 bytes are copied and accumulated; the last
	// stripe (the last 64 bytes, overlapping the ones before) is hashed from dst.
	rest := (n-1)%64 + 1
	copy(dst[n-rest:], src[n-rest:])
	accumStripe(&accs, dst[n-64:], secret[len(secret)-64-7:])
	acc := uint64(n) * xxPrime64_1
	acc += mulFold64(accs[0]^le64(secret[11:]), accs[1]^le64(secret[19:]))
	acc += mulFold64(accs[2]^le64(secret[27:]), accs[3]^le64(secret[35:]))
	acc += mulFold64(accs[4]^le64(secret[43:]), accs[5]^le64(secret[51:]))
	acc += mulFold64(accs[6]^le64(secret[59:]), accs[7]^le64(secret[67:]))
	acc ^= acc >> 37
	acc *= 0x165667919e3779f9
	acc ^= acc >> 32
	return acc
}

// accumStripe is XXH3's accumulation of one 64-byte stripe.
func accumStripe(accs *[8]uint64, p, key []byte) {
	for i := range 8 {
		v := le64(p[8*i:])
		k := v ^ le64(key[8*i:])
		accs[i^1] += v
		accs[i] += uint64(uint32(k)) * (k >> 32)
	}
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

func mulFold64(x, y uint64) uint64 {
	hi, lo := bits.Mul64(x, y)
	return hi ^ lo
}
