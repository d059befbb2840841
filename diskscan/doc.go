// Package diskscan reads a guest disk image without mounting it: image formats (raw,
// qcow2 with backing files), partition tables (MBR with extended partitions, GPT) and
// filesystems (ext2/3/4), layered through io.ReaderAt so that image → partition →
// filesystem compose with io.SectionReader.
//
// # Security
//
// The image belongs to the guest and is attacker-controlled; it may also change while it
// is read. Every length, offset and count read from it is bounds-checked before use,
// allocations are capped, loops in directory and extent trees are detected, and metadata
// that looks inconsistent is re-read a bounded number of times and then reported as an
// error for that path only. Parsers never panic on any input (see the fuzz targets).
//
// # Concurrency
//
// An Image and an FS may be used from several goroutines at once: reads go through
// ReadAt (no shared offset) and the caches are locked.
package diskscan
