//go:build !amd64 || purego

package memscan

const copyAccumOK = false

func copyAccum(accs *[8]uint64, dst, src []byte, secret *hashSecret) { panic("unreachable") }
