// Package filescan runs YARA rules over the files of a guest filesystem read from the
// target's disk image (diskscan), one libyara scanner per worker, and reports each
// rule that matched a file as a detectors.Finding (Detector "yara-file").
//
// Rules see the external variables Loki and THOR define for files: filename, filepath
// (the folder), extension (lower case, with its dot), filetype (from the first bytes),
// md5 (of the content) and owner (the owner's user name as the guest's /etc/passwd on
// the same filesystem says, else the uid in decimal).
//
// # Trust
//
// Files, names and /etc/passwd belong to the guest. Each worker holds at most one
// file of Scanner.MaxSize bytes (larger files are skipped and listed), a file that grows
// while it is read is cut and reported, /etc/passwd is read up to 4 MiB, and every
// failure is recorded for its path while the scan goes on.
package filescan
