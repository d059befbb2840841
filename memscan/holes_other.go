//go:build !linux

package memscan

import "os"

func dataAt(*os.File, uint64, uint64) (d, h uint64, ok bool) { return 0, 0, false }

func holesKnown(*os.File) bool { return false }
