// Package integrity is Domain M's file-integrity detector, in AIDE's spirit: a Policy
// selects guest paths and the attributes to watch, Collect walks a filesystem read from
// the target's disk image and turns the selected entries into Records (hashing file
// contents with several workers), a baseline DB stores the Records atomically
// (RecordBaseline), and a Comparer reports what was added, removed or changed since,
// attribute by attribute. Check is the whole check (open the baseline, walk, compare,
// sort): `domainm check` and the daemon's disk checker both call it, and
// Change.Finding turns each change into a typed detectors.Finding for alerts.
//
// # Trust
//
// The filesystem belongs to the guest. Metadata such as mtime can be forged from inside
// it, so contents are re-hashed on every check unless a selection explicitly sets
// trust_metadata; the shipped default policy never does for binaries. Paths are guest
// data: they are matched and printed, never joined onto host paths.
//
// # Damaged filesystems
//
// An entry that cannot be read is one Record with Err set and whatever could be read
// (a directory whose listing fails keeps its attributes). A check pairs records by path,
// the n-th record of a path with the n-th of the baseline (a damaged directory can hold
// two entries of one name), and the same error on both sides is no change: an image
// checked right after its baseline reports nothing, however damaged. The tests run every
// e2fsprogs test image through baseline and check (corpus_test.go).
package integrity
