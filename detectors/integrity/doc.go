// Package integrity is Domain M's file-integrity detector, in AIDE's spirit: a Policy
// selects guest paths and the attributes to watch, Collect walks a filesystem read from
// the target's disk image and turns the selected entries into Records (hashing file
// contents with several workers), a baseline DB stores the Records atomically, and
// Compare reports what was added, removed or changed since, attribute by attribute.
//
// # Trust
//
// The filesystem belongs to the guest. Metadata such as mtime can be forged from inside
// it, so contents are re-hashed on every check unless a selection explicitly sets
// trust_metadata; the shipped default policy never does for binaries. Paths are guest
// data: they are matched and printed, never joined onto host paths.
package integrity
