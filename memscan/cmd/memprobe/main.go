// Command memprobe is a test helper that runs inside a vmtest Linux guest: it opens a
// memscan source (typically an ivshmem BAR, file:/sys/bus/pci/devices/.../resource2),
// prints its ranges and every guest-physical address where a marker occurs, one
// "FOUND 0x..." line each, and ends with "PROBE-DONE" or "PROBE-ERROR ...".
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/domainm/domainm/memscan"
)

func main() {
	if err := run(os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stdout, "PROBE-ERROR %v\n", err)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stdout, "PROBE-DONE")
}

func run(out io.Writer, args []string) error {
	fs := flag.NewFlagSet("memprobe", flag.ContinueOnError)
	spec := fs.String("source", "", "memory source spec")
	marker := fs.String("marker", "", "bytes to look for")
	var layout memscan.Layout
	fs.Var(&layout, "layout", "file: layout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if path, ok := strings.CutPrefix(*spec, "file:"); ok {
		// Document what plain read() does on this file (EIO on an ivshmem BAR).
		if f, err := os.Open(path); err == nil {
			_, rerr := f.Read(make([]byte, 16))
			fmt.Fprintf(out, "READ %v\n", rerr)
			f.Close()
		}
	}
	src, err := memscan.Open(*spec, memscan.OpenOptions{Layout: layout})
	if err != nil {
		return err
	}
	defer src.Close()
	fmt.Fprintf(out, "RANGES %v\n", src.Ranges())
	buf := make([]byte, 1<<20)
	for _, r := range src.Ranges() {
		// Chunks overlap by len(marker)-1 so no occurrence is split.
		step := uint64(len(buf) - len(*marker) + 1)
		for gpa := r.GPA; gpa < r.End(); gpa += step {
			n := min(uint64(len(buf)), r.End()-gpa)
			if _, err := src.ReadAt(buf[:n], int64(gpa)); err != nil {
				return err
			}
			for off := 0; ; {
				i := bytes.Index(buf[off:n], []byte(*marker))
				if i < 0 {
					break
				}
				fmt.Fprintf(out, "FOUND %#x\n", gpa+uint64(off+i))
				off += i + 1
			}
			if n < uint64(len(buf)) {
				break
			}
		}
	}
	return nil
}
