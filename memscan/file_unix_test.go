//go:build unix

package memscan

import (
	"os"
	"syscall"
)

func fileBlocks(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks
	}
	return 0
}
