// Package mmap maps files read-only into memory for memscan's backends.
//
// It is one of the two places in memscan (with privcmd) that may import unsafe and
// golang.org/x/sys/unix; please keep it small and free of policy.
package mmap
