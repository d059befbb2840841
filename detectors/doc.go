// Package detectors holds what the detection engines produce: the Finding type shared
// by the memory scanner, the disk scanner and the alert pipeline, and the raw Match a
// rule engine reports for one scanned buffer.
//
// The YARA engine (cgo, libyara) lives in the subpackage detectors/yara so that
// packages that only need the types, such as the migration coordinator, stay cgo-free.
package detectors
