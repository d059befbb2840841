// Package detectors holds what the detection engines produce: the Finding type shared
// by the memory scanner, the disk scanner and the alert pipeline, and the raw Match a
// rule engine reports for one scanned buffer. A Finding carries what alerts need as
// typed fields (file description, attribute changes, process), never as strings to be
// parsed back.
//
// The YARA engine (cgo, libyara) lives in the subpackage detectors/yara so that
// packages that only need the types, such as the migration coordinator, stay cgo-free;
// detectors/integrity is the file-integrity detector and detectors/filescan runs YARA
// over the files of a guest filesystem.
package detectors
