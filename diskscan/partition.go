package diskscan

import (
	"errors"
	"io"
)

// Partition is one partition of a disk, in bytes from the start of the disk.
type Partition struct {
	Index  int    // 1-based as Linux numbers them (MBR logical partitions start at 5)
	Scheme string // "mbr", "gpt" or "none" (a bare filesystem: one partition = whole disk)
	Start  int64
	Size   int64
	Type   string // MBR: "0x83"; GPT: type GUID in canonical form
	Name   string // GPT partition name
}

// Partitions reads the partition table of a disk of the given size: MBR including
// extended/logical partitions, GPT (behind a protective MBR), or, without a table, one
// "none" partition covering the whole disk.
func Partitions(r io.ReaderAt, size int64) ([]Partition, error) {
	return nil, errors.New("diskscan: Partitions not implemented yet")
}
