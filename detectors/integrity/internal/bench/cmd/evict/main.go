// Command evict drops the page cache of the given files and of every regular file under
// the given folders (posix_fadvise DONTNEED), so a benchmark can measure cold reads of
// its own inputs without dropping the whole machine's cache.
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

func main() {
	n := 0
	for _, root := range os.Args[1:] {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return nil
			}
			defer f.Close()
			if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err == nil {
				n++
			}
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "evict:", err)
			os.Exit(1)
		}
	}
	fmt.Fprintf(os.Stderr, "evict: dropped the cache of %d files\n", n)
}
